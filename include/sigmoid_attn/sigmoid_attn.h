// sigmoid_attn for libtorch C++ services: at::Tensor in, at::Tensor out, no dispatcher, no
// Python. Link libsigmoid_attn_ops.so (which also registers torch.ops.sigmoid_attn.* for
// TorchScript and AOTInductor models) and include this header:
//
//   #include <sigmoid_attn/sigmoid_attn.h>
//   c10::InferenceMode guard;
//   at::Tensor out = sigmoid_attn::forward(q, k, v);                  // [B, T, H, D]
//   at::Tensor o2 = sigmoid_attn::forward(q, k, v, {.seq_lens_q = lens, .seq_lens_k = lens,
//                                                   .is_causal = true});
//   sigmoid_attn::forward_out(buffer, q, k, v);                       // into a reused buffer
//
// Same validation, kernels and stream as torch.ops.sigmoid_attn.forward; errors throw
// c10::Error with the op's message. Forward only: the output never requires grad (train through
// the op from Python or through the dispatcher).
#pragma once

#include <optional>

#include <ATen/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/csrc/inductor/aoti_torch/utils.h>

#include "sigmoid_attn/c_api.h"

namespace sigmoid_attn {

struct ForwardOptions {
  std::optional<at::Tensor> seq_lens_q;  // int32 [B]: valid query rows per sequence
  std::optional<at::Tensor> seq_lens_k;  // int32 [B]: valid keys per sequence
  bool is_causal = false;
  std::optional<double> scale;         // default 1/sqrt(D)
  std::optional<double> sigmoid_bias;  // a float added to every score
  std::optional<at::Tensor> sigmoid_bias_tensor;  // or floating [B], one per sequence
  std::optional<at::Tensor> score_mod;            // [B, Tk] added along keys
};

struct VarlenOptions {
  bool is_causal = false;
  std::optional<double> scale;
  std::optional<double> sigmoid_bias;
  std::optional<at::Tensor> sigmoid_bias_tensor;  // floating [B]
  std::optional<at::Tensor> score_mod;            // [total_k]
};

namespace detail {

inline AtenTensorHandle handle(const at::Tensor& t) {
  // Borrowed for the call: the library makes its own reference when it keeps one.
  return torch::aot_inductor::tensor_pointer_to_tensor_handle(const_cast<at::Tensor*>(&t));
}
inline AtenTensorHandle handle(const std::optional<at::Tensor>& t) {
  return t.has_value() ? handle(*t) : nullptr;
}
inline const double* ptr(const std::optional<double>& x) { return x.has_value() ? &*x : nullptr; }

inline at::Tensor take(int32_t rc, AtenTensorHandle out) {
  TORCH_CHECK(rc == 0, sigmoid_attn_last_error());
  at::Tensor t = std::move(*torch::aot_inductor::tensor_handle_to_tensor_pointer(out));
  aoti_torch_delete_tensor_object(out);
  return t;
}

}  // namespace detail

// q [B, Tq, Hq, D], k/v [B, Tk, Hkv, D] (Hq a multiple of Hkv) -> [B, Tq, Hq, D].
inline at::Tensor forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const ForwardOptions& o = {}) {
  AtenTensorHandle out = nullptr;
  const int32_t rc = sigmoid_attn_forward(
      detail::handle(q), detail::handle(k), detail::handle(v), detail::handle(o.seq_lens_q),
      detail::handle(o.seq_lens_k), o.is_causal, detail::ptr(o.scale),
      detail::ptr(o.sigmoid_bias), detail::handle(o.sigmoid_bias_tensor),
      detail::handle(o.score_mod), &out);
  return detail::take(rc, out);
}

// Packed: q [total_q, Hq, D], k/v [total_k, Hkv, D], cu_seqlens int32 [B + 1].
inline at::Tensor forward_varlen(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                                 int64_t max_seqlen_q, int64_t max_seqlen_k,
                                 const VarlenOptions& o = {}) {
  AtenTensorHandle out = nullptr;
  const int32_t rc = sigmoid_attn_forward_varlen(
      detail::handle(q), detail::handle(k), detail::handle(v), detail::handle(cu_seqlens_q),
      detail::handle(cu_seqlens_k), max_seqlen_q, max_seqlen_k, o.is_causal,
      detail::ptr(o.scale), detail::ptr(o.sigmoid_bias), detail::handle(o.sigmoid_bias_tensor),
      detail::handle(o.score_mod), &out);
  return detail::take(rc, out);
}

// The same into a caller's buffer: `out` contiguous, of the output's shape, q's dtype and
// device, 16-byte aligned, sharing no memory with q, k or v. No allocation on this path.
inline void forward_out(at::Tensor& out, const at::Tensor& q, const at::Tensor& k,
                        const at::Tensor& v, const ForwardOptions& o = {}) {
  const int32_t rc = sigmoid_attn_forward_out(
      detail::handle(q), detail::handle(k), detail::handle(v), detail::handle(o.seq_lens_q),
      detail::handle(o.seq_lens_k), o.is_causal, detail::ptr(o.scale),
      detail::ptr(o.sigmoid_bias), detail::handle(o.sigmoid_bias_tensor),
      detail::handle(o.score_mod), detail::handle(out));
  TORCH_CHECK(rc == 0, sigmoid_attn_last_error());
}

inline void forward_varlen_out(at::Tensor& out, const at::Tensor& q, const at::Tensor& k,
                               const at::Tensor& v, const at::Tensor& cu_seqlens_q,
                               const at::Tensor& cu_seqlens_k, int64_t max_seqlen_q,
                               int64_t max_seqlen_k, const VarlenOptions& o = {}) {
  const int32_t rc = sigmoid_attn_forward_varlen_out(
      detail::handle(q), detail::handle(k), detail::handle(v), detail::handle(cu_seqlens_q),
      detail::handle(cu_seqlens_k), max_seqlen_q, max_seqlen_k, o.is_causal,
      detail::ptr(o.scale), detail::ptr(o.sigmoid_bias), detail::handle(o.sigmoid_bias_tensor),
      detail::handle(o.score_mod), detail::handle(out));
  TORCH_CHECK(rc == 0, sigmoid_attn_last_error());
}

}  // namespace sigmoid_attn
