// CPU forward and backward in plain C++. Per (batch, kv head) task, K and V rows are converted
// once to the accumulation type (double for float64 inputs, float otherwise); each query row then
// walks its keys. Serves CPU tensors (and float64 for gradcheck) and is a second reference for
// the CUDA kernels: different code, same semantics.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include <torch/csrc/stable/ops.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include "alloc.h"
#include "check.h"
#include "kernel_spec.h"
#include "ops.h"
#include "validate.h"

namespace sigmoid_attn {

namespace {

using torch::headeronly::ScalarType;

int64_t clamp_len(const std::optional<Tensor>& lens, int64_t b, int64_t T) {
  if (!lens.has_value()) return T;
  const int32_t n = lens->const_data_ptr<int32_t>()[b * lens->stride(0)];
  return std::min<int64_t>(std::max<int64_t>(n, 0), T);  // same clamp as the kernels
}

// Where sequence b lives: q rows q0 .. q0 + Lq of batch entry qb (of Tq_own rows written), and
// k/v rows k0 .. k0 + Lk of entry kb. Dense: entry b, offset 0, lengths clamped to T. Packed:
// entry 0 (the tensors are viewed as [1, total, H, D]), offsets from cu_seqlens clamped to the
// tensor, lengths clamped to max_seqlen, exactly as the kernels do.
struct Seg {
  int64_t qb, q0, Lq, q_own, kb, k0, Lk, k_own;
};

// Everything a task needs besides the tensors' element type.
struct Common {
  ForwardProblem p;
  const std::optional<Tensor>& lens_q;  // seq_lens, or cu_seqlens when p.varlen
  const std::optional<Tensor>& lens_k;
  bool causal;
  const Tensor* bias;  // float64 [B] or null
  const Tensor* mod;   // float64 [B, Tk] (packed: [1, total_k]) or null

  Seg seg(int64_t b) const {
    if (!p.varlen) {
      const int64_t Lq = clamp_len(lens_q, b, p.Tq), Lk = clamp_len(lens_k, b, p.Tk);
      return Seg{b, 0, Lq, p.Tq, b, 0, Lk, p.Tk};
    }
    auto range = [&](const Tensor& cu, int64_t total, int64_t max_len, int64_t& off, int64_t& len) {
      const int32_t* c = cu.const_data_ptr<int32_t>();
      const int64_t st = cu.stride(0);
      off = std::min<int64_t>(std::max<int64_t>(c[b * st], 0), total);
      const int64_t end = std::min<int64_t>(std::max<int64_t>(c[(b + 1) * st], off), total);
      len = std::min(end - off, max_len);
    };
    Seg s{};
    range(*lens_q, p.Tq, p.max_q, s.q0, s.Lq);
    range(*lens_k, p.Tk, p.max_k, s.k0, s.Lk);
    s.q_own = s.Lq;  // rows outside every sequence are zero-filled up front
    s.k_own = s.Lk;
    return s;
  }

  template <typename A>
  A bias_of(int64_t b, int64_t Lk) const {
    if (p.bias_mode == 0) return -std::log(static_cast<A>(std::max<int64_t>(Lk, 1)));
    if (p.bias_mode == 1) return static_cast<A>(p.bias_value);
    return static_cast<A>(bias->const_data_ptr<double>()[b]);
  }
  template <typename A>
  A mod_of(const Seg& s, int64_t j) const {
    return mod ? static_cast<A>(mod->const_data_ptr<double>()[s.kb * mod->stride(0) +
                                                              (s.k0 + j) * mod->stride(1)])
               : A(0);
  }
};

// Dot product with 8 independent partial sums: the compiler vectorizes this (a single running
// sum is an ordered reduction it may not reorder without -ffast-math).
template <typename A>
inline A dot(const A* a, const A* b, int64_t n) {
  A part[8] = {};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) {
    for (int l = 0; l < 8; ++l) part[l] += a[d + l] * b[d + l];
  }
  A s = 0;
  for (; d < n; ++d) s += a[d] * b[d];
  for (int l = 0; l < 8; ++l) s += part[l];
  return s;
}

// Element offset of (b, i, h, 0) in a [B, T, H, D] tensor, or of (i, h, 0) in a packed
// [total, H, D] one (b is then 0).
inline int64_t offset(const Tensor& t, int64_t b, int64_t i, int64_t h) {
  return t.dim() == 3 ? i * t.stride(0) + h * t.stride(1)
                      : b * t.stride(0) + i * t.stride(1) + h * t.stride(2);
}
template <typename T>
const T* row(const Tensor& t, int64_t b, int64_t i, int64_t h) {
  return t.const_data_ptr<T>() + offset(t, b, i, h);
}
template <typename T>
T* mrow(Tensor& t, int64_t b, int64_t i, int64_t h) {
  return t.mutable_data_ptr<T>() + offset(t, b, i, h);
}

// n rows of k or v from row r0 of batch entry b, head h, in the accumulation type.
template <typename T, typename A>
void load_rows(const Tensor& t, int64_t b, int64_t r0, int64_t h, int64_t n, int64_t D,
               std::vector<A>& out) {
  out.resize(n * D);
  for (int64_t j = 0; j < n; ++j) {
    const T* r = row<T>(t, b, r0 + j, h);
    for (int64_t d = 0; d < D; ++d) out[j * D + d] = static_cast<A>(r[d]);
  }
}

template <typename T>
void forward_impl(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, const Common& c) {
  using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
  const ForwardProblem& p = c.p;
  const int64_t D = p.D, group = p.Hq / p.Hkv;
  torch::stable::parallel_for(0, p.B * p.Hkv, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> kf, vf, qf(D), acc(D);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / p.Hkv, hk = task % p.Hkv;
      const Seg sg = c.seg(b);
      const int64_t Lq = sg.Lq, Lk = sg.Lk;
      const A bias = c.bias_of<A>(b, Lk);
      load_rows<T>(k, sg.kb, sg.k0, hk, Lk, D, kf);
      load_rows<T>(v, sg.kb, sg.k0, hk, Lk, D, vf);
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        for (int64_t i = 0; i < sg.q_own; ++i) {
          std::fill(acc.begin(), acc.end(), A(0));
          if (i < Lq) {
            const T* qr = row<T>(q, sg.qb, sg.q0 + i, h);
            for (int64_t d = 0; d < D; ++d) qf[d] = static_cast<A>(qr[d]);
            const int64_t jend = c.causal ? std::min(Lk, i + 1) : Lk;
            for (int64_t j = 0; j < jend; ++j) {
              A s = dot(qf.data(), kf.data() + j * D, D);
              s = s * static_cast<A>(p.scale) + bias + c.mod_of<A>(sg, j);
              const A pr = A(1) / (A(1) + std::exp(-s));
              const A* vr = vf.data() + j * D;
              for (int64_t d = 0; d < D; ++d) acc[d] += pr * vr[d];
            }
          }
          T* orow = mrow<T>(out, sg.qb, sg.q0 + i, h);
          for (int64_t d = 0; d < D; ++d) orow[d] = static_cast<T>(acc[d]);
        }
      }
    }
  });
}

// One task per (batch, kv head): it owns dK/dV of that head and dQ of the q heads of its group,
// so no two tasks write the same element.
template <typename T>
void backward_impl(const Tensor& g, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& dq,
                   Tensor& dk, Tensor& dv, double* dmod_heads, const Common& c) {
  using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
  const ForwardProblem& p = c.p;
  const int64_t D = p.D, group = p.Hq / p.Hkv;
  const A scale = static_cast<A>(p.scale);
  torch::stable::parallel_for(0, p.B * p.Hkv, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> kf, vf, dkf, dvf, qf(D), gf(D), dqf(D);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / p.Hkv, hk = task % p.Hkv;
      const Seg sg = c.seg(b);
      const int64_t Lq = sg.Lq, Lk = sg.Lk;
      const A bias = c.bias_of<A>(b, Lk);
      load_rows<T>(k, sg.kb, sg.k0, hk, Lk, D, kf);
      load_rows<T>(v, sg.kb, sg.k0, hk, Lk, D, vf);
      dkf.assign(sg.k_own * D, A(0));
      dvf.assign(sg.k_own * D, A(0));
      // dmod_heads is [B, Hkv, Tk] dense, [1, Hkv, total_k] packed.
      double* dm = dmod_heads ? dmod_heads + (sg.kb * p.Hkv + hk) * p.Tk + sg.k0 : nullptr;
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        for (int64_t i = 0; i < sg.q_own; ++i) {
          std::fill(dqf.begin(), dqf.end(), A(0));
          if (i < Lq) {
            const T* qr = row<T>(q, sg.qb, sg.q0 + i, h);
            const T* gr = row<T>(g, sg.qb, sg.q0 + i, h);
            for (int64_t d = 0; d < D; ++d) {
              qf[d] = static_cast<A>(qr[d]);
              gf[d] = static_cast<A>(gr[d]);
            }
            const int64_t jend = c.causal ? std::min(Lk, i + 1) : Lk;
            for (int64_t j = 0; j < jend; ++j) {
              const A* kr = kf.data() + j * D;
              const A* vr = vf.data() + j * D;
              A s = dot(qf.data(), kr, D);
              const A dp = dot(gf.data(), vr, D);
              s = s * scale + bias + c.mod_of<A>(sg, j);
              const A pr = A(1) / (A(1) + std::exp(-s));
              const A ds = dp * pr * (A(1) - pr);
              A* dkr = dkf.data() + j * D;
              A* dvr = dvf.data() + j * D;
              for (int64_t d = 0; d < D; ++d) {
                dqf[d] += ds * kr[d];
                dkr[d] += ds * qf[d];
                dvr[d] += pr * gf[d];
              }
              if (dm) dm[j] += static_cast<double>(ds);
            }
          }
          T* dqr = mrow<T>(dq, sg.qb, sg.q0 + i, h);
          for (int64_t d = 0; d < D; ++d) dqr[d] = static_cast<T>(dqf[d] * scale);
        }
      }
      for (int64_t j = 0; j < sg.k_own; ++j) {
        T* dkr = mrow<T>(dk, sg.kb, sg.k0 + j, hk);
        T* dvr = mrow<T>(dv, sg.kb, sg.k0 + j, hk);
        for (int64_t d = 0; d < D; ++d) {
          dkr[d] = static_cast<T>(dkf[j * D + d] * scale);
          dvr[d] = static_cast<T>(dvf[j * D + d]);
        }
      }
    }
  });
}

template <typename F>
void dispatch_dtype(ScalarType dt, F&& f) {
  switch (dt) {
    case ScalarType::Double: f(double{}); break;
    case ScalarType::Float: f(float{}); break;
    case ScalarType::Half: f(torch::headeronly::Half{}); break;
    case ScalarType::BFloat16: f(torch::headeronly::BFloat16{}); break;
    default: SA_CHECK(false, "sigmoid_attention: unsupported CPU dtype ", toString(dt));
  }
}

std::optional<Tensor> as_f64(const std::optional<Tensor>& t) {
  if (!t.has_value()) return std::nullopt;
  return torch::stable::contiguous(torch::stable::to(*t, ScalarType::Double));
}

}  // namespace

namespace {

void forward_into(const ForwardProblem& p, SIGMOID_ATTN_FORWARD_ARGS, Tensor& out) {
  if (out.numel() == 0) return;
  const auto bias = p.bias_mode == kBiasTensor ? as_f64(sigmoid_bias_tensor) : std::nullopt;
  const auto mod = as_f64(score_mod);
  const Common c{p, seq_lens_q, seq_lens_k, is_causal, bias ? &*bias : nullptr,
                 mod ? &*mod : nullptr};
  dispatch_dtype(q.scalar_type(), [&](auto tag) {
    forward_impl<decltype(tag)>(q, k, v, out, c);
  });
}

// `out` zero-filled: rows outside every sequence (past cu_seqlens_q[B]) stay zero.
void forward_varlen_into(const ForwardProblem& p, SIGMOID_ATTN_VARLEN_ARGS, Tensor& out) {
  if (out.numel() == 0 || p.B == 0) return;
  const auto bias = p.bias_mode == kBiasTensor ? as_f64(sigmoid_bias_tensor) : std::nullopt;
  auto mod = as_f64(score_mod);
  if (mod) mod = torch::stable::unsqueeze(*mod, 0);  // [1, total_k], indexed like [B, Tk]
  const std::optional<Tensor> cu_q = cu_seqlens_q, cu_k = cu_seqlens_k;
  const Common c{p, cu_q, cu_k, is_causal, bias ? &*bias : nullptr, mod ? &*mod : nullptr};
  dispatch_dtype(q.scalar_type(), [&](auto tag) {
    forward_impl<decltype(tag)>(q, k, v, out, c);
  });
}

}  // namespace

Tensor forward_cpu(SIGMOID_ATTN_FORWARD_ARGS) {
  const ForwardProblem p = check_forward({SIGMOID_ATTN_FORWARD_PASS}, Backend::kCPU);
  Tensor out = empty_cpu(q, {p.B, p.Tq, p.Hq, p.D});
  forward_into(p, SIGMOID_ATTN_FORWARD_PASS, out);
  return out;
}

void forward_cpu_out(SIGMOID_ATTN_FORWARD_ARGS, const Tensor& out) {
  const ForwardProblem p = check_forward({SIGMOID_ATTN_FORWARD_PASS}, Backend::kCPU);
  check_out(out, {p.B, p.Tq, p.Hq, p.D}, q, k, v, seq_lens_q, seq_lens_k, sigmoid_bias_tensor,
            score_mod);
  Tensor o = out;
  forward_into(p, SIGMOID_ATTN_FORWARD_PASS, o);
}

Grads backward_cpu(Tensor grad_out, SIGMOID_ATTN_FORWARD_ARGS) {
  const ForwardProblem p = check_backward(
      grad_out,
      {q, k, v, seq_lens_q, seq_lens_k, is_causal, scale, sigmoid_bias, sigmoid_bias_tensor,
       score_mod},
      Backend::kCPU);
  Tensor dq = empty_cpu(q, {p.B, p.Tq, p.Hq, p.D});
  Tensor dk = empty_cpu(k, {p.B, p.Tk, p.Hkv, p.D});
  Tensor dv = empty_cpu(v, {p.B, p.Tk, p.Hkv, p.D});
  if (p.Hq == 0) {  // no query head: dk/dv are never visited by a task below, and are zero
    torch::stable::zero_(dk);
    torch::stable::zero_(dv);
  }
  const bool has_mod = score_mod.has_value();
  Tensor dmod_heads = torch::stable::new_zeros(q, {has_mod ? p.B : 0, p.Hkv, p.Tk},
                                               ScalarType::Double);
  if (p.B > 0 && p.Hq > 0) {
    const auto bias = p.bias_mode == kBiasTensor ? as_f64(sigmoid_bias_tensor) : std::nullopt;
    const auto mod = as_f64(score_mod);
    const Common c{p, seq_lens_q, seq_lens_k, is_causal, bias ? &*bias : nullptr,
                   mod ? &*mod : nullptr};
    double* dm = has_mod ? dmod_heads.mutable_data_ptr<double>() : nullptr;
    dispatch_dtype(q.scalar_type(), [&](auto tag) {
      backward_impl<decltype(tag)>(grad_out, q, k, v, dq, dk, dv, dm, c);
    });
  }
  // Same contract as CUDA: float32 [B, Tk] (float64 when the inputs are float64).
  const ScalarType mod_dt = q.scalar_type() == ScalarType::Double ? ScalarType::Double
                                                                  : ScalarType::Float;
  Tensor dmod = has_mod ? torch::stable::to(torch::stable::sum(dmod_heads, std::vector<int64_t>{1}),
                                            mod_dt)
                        : torch::stable::new_empty(q, {0}, ScalarType::Float);
  return Grads{dq, dk, dv, dmod};
}

Tensor forward_varlen_cpu(SIGMOID_ATTN_VARLEN_ARGS) {
  const ForwardProblem p = check_forward_varlen({SIGMOID_ATTN_VARLEN_PASS}, Backend::kCPU);
  Tensor out = torch::stable::new_zeros(q, {p.Tq, p.Hq, p.D});
  forward_varlen_into(p, SIGMOID_ATTN_VARLEN_PASS, out);
  return out;
}

void forward_varlen_cpu_out(SIGMOID_ATTN_VARLEN_ARGS, const Tensor& out) {
  const ForwardProblem p = check_forward_varlen({SIGMOID_ATTN_VARLEN_PASS}, Backend::kCPU);
  check_out(out, {p.Tq, p.Hq, p.D}, q, k, v, cu_seqlens_q, cu_seqlens_k, sigmoid_bias_tensor,
            score_mod);
  Tensor o = out;
  torch::stable::zero_(o);
  forward_varlen_into(p, SIGMOID_ATTN_VARLEN_PASS, o);
}

Grads backward_varlen_cpu(Tensor grad_out, SIGMOID_ATTN_VARLEN_ARGS) {
  const ForwardProblem p = check_backward_varlen(
      grad_out,
      {q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, is_causal, scale,
       sigmoid_bias, sigmoid_bias_tensor, score_mod},
      Backend::kCPU);
  Tensor dq = torch::stable::new_zeros(q, {p.Tq, p.Hq, p.D});
  Tensor dk = torch::stable::new_zeros(k, {p.Tk, p.Hkv, p.D});
  Tensor dv = torch::stable::new_zeros(v, {p.Tk, p.Hkv, p.D});
  const bool has_mod = score_mod.has_value();
  Tensor dmod_heads = torch::stable::new_zeros(q, {1, p.Hkv, has_mod ? p.Tk : 0},
                                               ScalarType::Double);
  if (p.B > 0 && p.Hq > 0) {
    const auto bias = p.bias_mode == kBiasTensor ? as_f64(sigmoid_bias_tensor) : std::nullopt;
    auto mod = as_f64(score_mod);
    if (mod) mod = torch::stable::unsqueeze(*mod, 0);
    const std::optional<Tensor> cu_q = cu_seqlens_q, cu_k = cu_seqlens_k;
    const Common c{p, cu_q, cu_k, is_causal, bias ? &*bias : nullptr, mod ? &*mod : nullptr};
    double* dm = has_mod ? dmod_heads.mutable_data_ptr<double>() : nullptr;
    dispatch_dtype(q.scalar_type(), [&](auto tag) {
      backward_impl<decltype(tag)>(grad_out, q, k, v, dq, dk, dv, dm, c);
    });
  }
  const ScalarType mod_dt = q.scalar_type() == ScalarType::Double ? ScalarType::Double
                                                                  : ScalarType::Float;
  Tensor dmod = has_mod ? torch::stable::to(torch::stable::sum(dmod_heads,
                                                               std::vector<int64_t>{0, 1}),
                                            mod_dt)
                        : torch::stable::new_empty(q, {0}, ScalarType::Float);
  return Grads{dq, dk, dv, dmod};
}

}  // namespace sigmoid_attn
