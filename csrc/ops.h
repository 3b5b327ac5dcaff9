// The forward and backward ops, one implementation per dispatch key (ops_cpu.cpp, ops_cuda.cpp, ops_meta.cpp).
// Schema (register.cpp):
//   forward(Tensor q, Tensor k, Tensor v, Tensor? seq_lens_q=None, Tensor? seq_lens_k=None,
//           bool is_causal=False, float? scale=None, float? sigmoid_bias=None,
//           Tensor? sigmoid_bias_tensor=None, Tensor? score_mod=None) -> Tensor
#pragma once

#include <optional>
#include <tuple>

#include <torch/csrc/stable/tensor.h>

namespace sigmoid_attn {

using torch::stable::Tensor;

#define SIGMOID_ATTN_FORWARD_ARGS                                                      \
  Tensor q, Tensor k, Tensor v, std::optional<Tensor> seq_lens_q,                      \
      std::optional<Tensor> seq_lens_k, bool is_causal, std::optional<double> scale,   \
      std::optional<double> sigmoid_bias, std::optional<Tensor> sigmoid_bias_tensor,   \
      std::optional<Tensor> score_mod

Tensor forward_cpu(SIGMOID_ATTN_FORWARD_ARGS);
Tensor forward_cuda(SIGMOID_ATTN_FORWARD_ARGS);
Tensor forward_meta(SIGMOID_ATTN_FORWARD_ARGS);

// backward(Tensor grad_out, <forward's arguments>) -> (dq, dk, dv, dscore_mod)
// dscore_mod is float32 [B, Tk] when score_mod is given, an empty [0] tensor otherwise.
using Grads = std::tuple<Tensor, Tensor, Tensor, Tensor>;
Grads backward_cpu(Tensor grad_out, SIGMOID_ATTN_FORWARD_ARGS);
Grads backward_cuda(Tensor grad_out, SIGMOID_ATTN_FORWARD_ARGS);
Grads backward_meta(Tensor grad_out, SIGMOID_ATTN_FORWARD_ARGS);

}  // namespace sigmoid_attn
