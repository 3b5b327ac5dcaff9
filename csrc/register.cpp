// Op schemas (declared once) and their per-backend implementations.
#include <torch/csrc/stable/library.h>

#include "ops.h"

STABLE_TORCH_LIBRARY(sigmoid_attn, m) {
  m.def(
      "forward(Tensor q, Tensor k, Tensor v, Tensor? seq_lens_q=None, Tensor? seq_lens_k=None, "
      "bool is_causal=False, float? scale=None, float? sigmoid_bias=None, "
      "Tensor? sigmoid_bias_tensor=None, Tensor? score_mod=None) -> Tensor");
}

STABLE_TORCH_LIBRARY_IMPL(sigmoid_attn, CPU, m) {
  m.impl("forward", TORCH_BOX(&sigmoid_attn::forward_cpu));
}

STABLE_TORCH_LIBRARY_IMPL(sigmoid_attn, CUDA, m) {
  m.impl("forward", TORCH_BOX(&sigmoid_attn::forward_cuda));
}

// Shapes only: used by torch.compile / torch.export fake tensors, with the same validation.
STABLE_TORCH_LIBRARY_IMPL(sigmoid_attn, Meta, m) {
  m.impl("forward", TORCH_BOX(&sigmoid_attn::forward_meta));
}
