#include <torch/csrc/stable/ops.h>

#include "ops.h"
#include "validate.h"

namespace sigmoid_attn {

Tensor forward_meta(SIGMOID_ATTN_FORWARD_ARGS) {
  const ForwardProblem p = check_forward(
      {q, k, v, seq_lens_q, seq_lens_k, is_causal, scale, sigmoid_bias, sigmoid_bias_tensor,
       score_mod},
      Backend::kMeta);
  return torch::stable::new_empty(q, {p.B, p.Tq, p.Hq, p.D});
}

}  // namespace sigmoid_attn
