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
// c10::Error with the op's message. Forward only: with grad mode on, an input that requires
// grad is an error rather than a gradient silently lost (train through the op from Python, or
// run under c10::InferenceMode / torch::NoGradGuard). Inputs that are lazily negated views
// (Tensor::is_neg) are materialized first, so they read as the values they stand for.
#pragma once

#include <initializer_list>
#include <optional>

#include <ATen/Tensor.h>
#include <c10/core/GradMode.h>
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

// The C API reads memory: a negation bit (Tensor::is_neg, a lazy view) is resolved here, where
// the full ATen API is at hand; testing the bit is all a plain tensor costs.
inline at::Tensor plain(const at::Tensor& t) { return t.is_neg() ? t.resolve_neg() : t; }
inline std::optional<at::Tensor> plain(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(plain(*t)) : std::nullopt;
}

inline void check_no_grad(const char* fn,
                          std::initializer_list<std::pair<const char*, const at::Tensor*>> ts) {
  if (!c10::GradMode::is_enabled()) return;
  for (const auto& [name, t] : ts) {
    TORCH_CHECK(t == nullptr || !t->defined() || !t->requires_grad(), "sigmoid_attn::", fn,
                ": ", name, " requires grad, and this C++ entry point is forward only (its output "
                "carries no gradient); run it under c10::InferenceMode or torch::NoGradGuard, or "
                "train through torch.ops.sigmoid_attn from Python");
  }
}

inline const at::Tensor* opt(const std::optional<at::Tensor>& t) {
  return t.has_value() ? &*t : nullptr;
}

inline void check_out(const char* fn, const at::Tensor& out) {
  TORCH_CHECK(!out.is_neg(), "sigmoid_attn::", fn,
              ": out must not be a lazily negated view (Tensor::is_neg); pass a plain buffer");
}

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
  detail::check_no_grad("forward", {{"q", &q}, {"k", &k}, {"v", &v},
                                    {"sigmoid_bias_tensor", detail::opt(o.sigmoid_bias_tensor)},
                                    {"score_mod", detail::opt(o.score_mod)}});
  const at::Tensor q_ = detail::plain(q), k_ = detail::plain(k), v_ = detail::plain(v);
  const auto bias = detail::plain(o.sigmoid_bias_tensor), mod = detail::plain(o.score_mod);
  AtenTensorHandle out = nullptr;
  const int32_t rc = sigmoid_attn_forward(
      detail::handle(q_), detail::handle(k_), detail::handle(v_), detail::handle(o.seq_lens_q),
      detail::handle(o.seq_lens_k), o.is_causal, detail::ptr(o.scale),
      detail::ptr(o.sigmoid_bias), detail::handle(bias), detail::handle(mod), &out);
  return detail::take(rc, out);
}

// Packed: q [total_q, Hq, D], k/v [total_k, Hkv, D], cu_seqlens int32 [B + 1].
inline at::Tensor forward_varlen(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                                 int64_t max_seqlen_q, int64_t max_seqlen_k,
                                 const VarlenOptions& o = {}) {
  detail::check_no_grad("forward_varlen",
                        {{"q", &q}, {"k", &k}, {"v", &v},
                         {"sigmoid_bias_tensor", detail::opt(o.sigmoid_bias_tensor)},
                         {"score_mod", detail::opt(o.score_mod)}});
  const at::Tensor q_ = detail::plain(q), k_ = detail::plain(k), v_ = detail::plain(v);
  const auto bias = detail::plain(o.sigmoid_bias_tensor), mod = detail::plain(o.score_mod);
  AtenTensorHandle out = nullptr;
  const int32_t rc = sigmoid_attn_forward_varlen(
      detail::handle(q_), detail::handle(k_), detail::handle(v_), detail::handle(cu_seqlens_q),
      detail::handle(cu_seqlens_k), max_seqlen_q, max_seqlen_k, o.is_causal,
      detail::ptr(o.scale), detail::ptr(o.sigmoid_bias), detail::handle(bias),
      detail::handle(mod), &out);
  return detail::take(rc, out);
}

// The same into a caller's buffer: `out` contiguous, of the output's shape, q's dtype and
// device, 16-byte aligned, sharing no memory with q, k or v. No allocation on this path.
inline void forward_out(at::Tensor& out, const at::Tensor& q, const at::Tensor& k,
                        const at::Tensor& v, const ForwardOptions& o = {}) {
  detail::check_out("forward_out", out);
  const at::Tensor q_ = detail::plain(q), k_ = detail::plain(k), v_ = detail::plain(v);
  const auto bias = detail::plain(o.sigmoid_bias_tensor), mod = detail::plain(o.score_mod);
  const int32_t rc = sigmoid_attn_forward_out(
      detail::handle(q_), detail::handle(k_), detail::handle(v_), detail::handle(o.seq_lens_q),
      detail::handle(o.seq_lens_k), o.is_causal, detail::ptr(o.scale),
      detail::ptr(o.sigmoid_bias), detail::handle(bias), detail::handle(mod),
      detail::handle(out));
  TORCH_CHECK(rc == 0, sigmoid_attn_last_error());
}

inline void forward_varlen_out(at::Tensor& out, const at::Tensor& q, const at::Tensor& k,
                               const at::Tensor& v, const at::Tensor& cu_seqlens_q,
                               const at::Tensor& cu_seqlens_k, int64_t max_seqlen_q,
                               int64_t max_seqlen_k, const VarlenOptions& o = {}) {
  detail::check_out("forward_varlen_out", out);
  const at::Tensor q_ = detail::plain(q), k_ = detail::plain(k), v_ = detail::plain(v);
  const auto bias = detail::plain(o.sigmoid_bias_tensor), mod = detail::plain(o.score_mod);
  const int32_t rc = sigmoid_attn_forward_varlen_out(
      detail::handle(q_), detail::handle(k_), detail::handle(v_), detail::handle(cu_seqlens_q),
      detail::handle(cu_seqlens_k), max_seqlen_q, max_seqlen_k, o.is_causal,
      detail::ptr(o.scale), detail::ptr(o.sigmoid_bias), detail::handle(bias),
      detail::handle(mod), detail::handle(out));
  TORCH_CHECK(rc == 0, sigmoid_attn_last_error());
}

}  // namespace sigmoid_attn
