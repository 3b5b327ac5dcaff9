#include <torch/csrc/stable/ops.h>

#include "ops.h"
#include "validate.h"

namespace sigmoid_attn {

using torch::headeronly::ScalarType;

Tensor forward_meta(SIGMOID_ATTN_FORWARD_ARGS) {
  const ForwardProblem p = check_forward(
      {q, k, v, seq_lens_q, seq_lens_k, is_causal, scale, sigmoid_bias, sigmoid_bias_tensor,
       score_mod},
      Backend::kMeta);
  return torch::stable::new_empty(q, {p.B, p.Tq, p.Hq, p.D});
}

Grads backward_meta(Tensor grad_out, SIGMOID_ATTN_FORWARD_ARGS, bool /*deterministic*/) {
  const ForwardProblem p = check_backward(
      grad_out,
      {q, k, v, seq_lens_q, seq_lens_k, is_causal, scale, sigmoid_bias, sigmoid_bias_tensor,
       score_mod},
      Backend::kMeta);
  const ScalarType mod_dt = q.scalar_type() == ScalarType::Double ? ScalarType::Double
                                                                  : ScalarType::Float;
  return Grads{torch::stable::new_empty(q, {p.B, p.Tq, p.Hq, p.D}),
               torch::stable::new_empty(k, {p.B, p.Tk, p.Hkv, p.D}),
               torch::stable::new_empty(v, {p.B, p.Tk, p.Hkv, p.D}),
               score_mod.has_value() ? torch::stable::new_empty(q, {p.B, p.Tk}, mod_dt)
                                     : torch::stable::new_empty(q, {0}, ScalarType::Float)};
}

Tensor forward_varlen_meta(SIGMOID_ATTN_VARLEN_ARGS) {
  const ForwardProblem p = check_forward_varlen(
      {q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, is_causal, scale,
       sigmoid_bias, sigmoid_bias_tensor, score_mod},
      Backend::kMeta);
  return torch::stable::new_empty(q, {p.Tq, p.Hq, p.D});
}

Grads backward_varlen_meta(Tensor grad_out, SIGMOID_ATTN_VARLEN_ARGS,
                          bool /*deterministic*/) {
  const ForwardProblem p = check_backward_varlen(
      grad_out,
      {q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, is_causal, scale,
       sigmoid_bias, sigmoid_bias_tensor, score_mod},
      Backend::kMeta);
  const ScalarType mod_dt = q.scalar_type() == ScalarType::Double ? ScalarType::Double
                                                                  : ScalarType::Float;
  return Grads{torch::stable::new_empty(q, {p.Tq, p.Hq, p.D}),
               torch::stable::new_empty(k, {p.Tk, p.Hkv, p.D}),
               torch::stable::new_empty(v, {p.Tk, p.Hkv, p.D}),
               score_mod.has_value() ? torch::stable::new_empty(q, {p.Tk}, mod_dt)
                                     : torch::stable::new_empty(q, {0}, ScalarType::Float)};
}

}  // namespace sigmoid_attn
