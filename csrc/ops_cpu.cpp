// CPU forward in plain C++: per (batch, head) task, K and V rows are converted once to fp32,
// then each query row accumulates sigmoid(score) * v in fp32. Serves CPU tensors and is a
// second reference for the CUDA kernels (different code, same semantics).
#include <algorithm>
#include <cmath>
#include <vector>

#include <torch/csrc/stable/ops.h>
#include <torch/headeronly/util/BFloat16.h>
#include "check.h"
#include <torch/headeronly/util/Half.h>

#include "ops.h"
#include "validate.h"

namespace sigmoid_attn {

namespace {

using torch::headeronly::ScalarType;

int64_t clamp_len(const std::optional<Tensor>& lens, int64_t b, int64_t T) {
  if (!lens.has_value()) return T;
  const int32_t n = lens->const_data_ptr<int32_t>()[b * lens->stride(0)];
  return std::min<int64_t>(std::max<int64_t>(n, 0), T);  // same clamp as the kernel
}

template <typename T>
void forward_impl(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                  const ForwardProblem& p, const std::optional<Tensor>& lens_q,
                  const std::optional<Tensor>& lens_k, bool causal, const float* bias,
                  const Tensor* mod) {
  const T* Q = q.const_data_ptr<T>();
  const T* K = k.const_data_ptr<T>();
  const T* V = v.const_data_ptr<T>();
  T* O = out.mutable_data_ptr<T>();
  const int64_t D = p.D, group = p.Hq / p.Hkv;
  const float* M = mod ? mod->const_data_ptr<float>() : nullptr;
  const int64_t msb = mod ? mod->stride(0) : 0, mst = mod ? mod->stride(1) : 0;

  torch::stable::parallel_for(0, p.B * p.Hq, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> kf, vf, qf(D), acc(D);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / p.Hq, h = task % p.Hq, hk = h / group;
      const int64_t Lq = clamp_len(lens_q, b, p.Tq), Lk = clamp_len(lens_k, b, p.Tk);
      const float bias_b = p.bias_mode == 0   ? -std::log(static_cast<float>(std::max<int64_t>(Lk, 1)))
                           : p.bias_mode == 1 ? p.bias_value
                                              : bias[b];
      kf.resize(Lk * D);
      vf.resize(Lk * D);
      for (int64_t j = 0; j < Lk; ++j) {
        const T* kr = K + b * k.stride(0) + j * k.stride(1) + hk * k.stride(2);
        const T* vr = V + b * v.stride(0) + j * v.stride(1) + hk * v.stride(2);
        for (int64_t d = 0; d < D; ++d) {
          kf[j * D + d] = static_cast<float>(kr[d]);
          vf[j * D + d] = static_cast<float>(vr[d]);
        }
      }
      for (int64_t i = 0; i < p.Tq; ++i) {
        T* orow = O + b * out.stride(0) + i * out.stride(1) + h * out.stride(2);
        std::fill(acc.begin(), acc.end(), 0.f);
        if (i < Lq) {
          const T* qr = Q + b * q.stride(0) + i * q.stride(1) + h * q.stride(2);
          for (int64_t d = 0; d < D; ++d) qf[d] = static_cast<float>(qr[d]);
          const int64_t jend = causal ? std::min(Lk, i + 1) : Lk;
          for (int64_t j = 0; j < jend; ++j) {
            const float* kr = kf.data() + j * D;
            float s = 0.f;
            for (int64_t d = 0; d < D; ++d) s += qf[d] * kr[d];
            s = s * p.scale + bias_b + (M ? M[b * msb + j * mst] : 0.f);
            const float pr = 1.f / (1.f + std::exp(-s));
            const float* vr = vf.data() + j * D;
            for (int64_t d = 0; d < D; ++d) acc[d] += pr * vr[d];
          }
        }
        for (int64_t d = 0; d < D; ++d) orow[d] = static_cast<T>(acc[d]);
      }
    }
  });
}

}  // namespace

Tensor forward_cpu(SIGMOID_ATTN_FORWARD_ARGS) {
  const ForwardProblem p = check_forward(
      {q, k, v, seq_lens_q, seq_lens_k, is_causal, scale, sigmoid_bias, sigmoid_bias_tensor,
       score_mod},
      Backend::kCPU);
  Tensor out = torch::stable::new_empty(q, {p.B, p.Tq, p.Hq, p.D});
  if (out.numel() == 0) return out;
  std::optional<Tensor> bias, mod;
  if (p.bias_mode == 2) {
    bias = torch::stable::contiguous(torch::stable::to(*sigmoid_bias_tensor, ScalarType::Float));
  }
  if (score_mod.has_value()) mod = torch::stable::to(*score_mod, ScalarType::Float);
  const float* bias_ptr = bias ? bias->const_data_ptr<float>() : nullptr;
  const Tensor* mod_ptr = mod ? &*mod : nullptr;
  switch (q.scalar_type()) {
    case ScalarType::Float:
      forward_impl<float>(q, k, v, out, p, seq_lens_q, seq_lens_k, is_causal, bias_ptr, mod_ptr);
      break;
    case ScalarType::Half:
      forward_impl<torch::headeronly::Half>(q, k, v, out, p, seq_lens_q, seq_lens_k, is_causal,
                                            bias_ptr, mod_ptr);
      break;
    case ScalarType::BFloat16:
      forward_impl<torch::headeronly::BFloat16>(q, k, v, out, p, seq_lens_q, seq_lens_k,
                                                is_causal, bias_ptr, mod_ptr);
      break;
    default:
      SA_CHECK(false, "sigmoid_attention: unsupported dtype ", dtype_str(q));
  }
  return out;
}

}  // namespace sigmoid_attn
