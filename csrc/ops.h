// The forward and backward ops, one implementation per dispatch key (ops_cpu.cpp, ops_cuda.cpp);
// their validation for fake tensors (ops_meta.cpp).
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

// forward_varlen(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor cu_seqlens_k,
//                int max_seqlen_q, int max_seqlen_k, <is_causal ... score_mod as above>)
// q: [total_q, Hq, D], k/v: [total_k, Hkv, D], cu_seqlens: int32 [B + 1], score_mod: [total_k].
#define SIGMOID_ATTN_VARLEN_ARGS                                                       \
  Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor cu_seqlens_k,              \
      int64_t max_seqlen_q, int64_t max_seqlen_k, bool is_causal,                      \
      std::optional<double> scale, std::optional<double> sigmoid_bias,                 \
      std::optional<Tensor> sigmoid_bias_tensor, std::optional<Tensor> score_mod

// The arguments of SIGMOID_ATTN_FORWARD_ARGS / _VARLEN_ARGS, passed on.
#define SIGMOID_ATTN_FORWARD_PASS                                                            \
  q, k, v, seq_lens_q, seq_lens_k, is_causal, scale, sigmoid_bias, sigmoid_bias_tensor,    \
      score_mod
#define SIGMOID_ATTN_VARLEN_PASS                                                             \
  q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, is_causal, scale,      \
      sigmoid_bias, sigmoid_bias_tensor, score_mod

Tensor forward_cpu(SIGMOID_ATTN_FORWARD_ARGS);
Tensor forward_cuda(SIGMOID_ATTN_FORWARD_ARGS);
// The same into a caller's buffer (validate.h's check_out): the C/C++ API's *_out entry points.
void forward_cpu_out(SIGMOID_ATTN_FORWARD_ARGS, const Tensor& out);
void forward_cuda_out(SIGMOID_ATTN_FORWARD_ARGS, const Tensor& out);

// backward(Tensor grad_out, <forward's arguments>, bool deterministic=False)
//   -> (dq, dk, dv, dscore_mod)
// dscore_mod is float32 [B, Tk] when score_mod is given, an empty [0] tensor otherwise.
// deterministic: only kernels whose every output element has one writer (bitwise reproducible):
// no kernel that sums dQ by fp32 atomics, whatever the dispatch switches say. The stable ABI
// cannot read torch's deterministic mode, so the caller passes it (the Python autograd passes
// torch.are_deterministic_algorithms_enabled()). The CPU path is deterministic either way.
using Grads = std::tuple<Tensor, Tensor, Tensor, Tensor>;
Grads backward_cpu(Tensor grad_out, SIGMOID_ATTN_FORWARD_ARGS, bool deterministic);
Grads backward_cuda(Tensor grad_out, SIGMOID_ATTN_FORWARD_ARGS, bool deterministic);

}  // namespace sigmoid_attn

namespace sigmoid_attn {

Tensor forward_varlen_cpu(SIGMOID_ATTN_VARLEN_ARGS);
Tensor forward_varlen_cuda(SIGMOID_ATTN_VARLEN_ARGS);

// The validation of an op as the device `device_type` (0 CPU, 1 CUDA, else meta) performs it,
// the CUDA kernel choice included; on meta tensors (ops_meta.cpp). The fake implementations of
// torch.compile / torch.export call these through the _check_* ops.
void check_forward_on(SIGMOID_ATTN_FORWARD_ARGS, int64_t device_type);
void check_backward_on(Tensor grad_out, SIGMOID_ATTN_FORWARD_ARGS, bool deterministic,
                       int64_t device_type);
void check_forward_varlen_on(SIGMOID_ATTN_VARLEN_ARGS, int64_t device_type);
void check_backward_varlen_on(Tensor grad_out, SIGMOID_ATTN_VARLEN_ARGS, bool deterministic,
                              int64_t device_type);
void forward_varlen_cpu_out(SIGMOID_ATTN_VARLEN_ARGS, const Tensor& out);
void forward_varlen_cuda_out(SIGMOID_ATTN_VARLEN_ARGS, const Tensor& out);
// backward_varlen(Tensor grad_out, <forward_varlen's arguments>, bool deterministic=False)
//   -> (dq, dk, dv, dscore_mod)
// dscore_mod is float32 [total_k] with score_mod, an empty [0] tensor otherwise.
Grads backward_varlen_cpu(Tensor grad_out, SIGMOID_ATTN_VARLEN_ARGS, bool deterministic);
Grads backward_varlen_cuda(Tensor grad_out, SIGMOID_ATTN_VARLEN_ARGS, bool deterministic);

}  // namespace sigmoid_attn
