#include "dispatch.h"
#include "ops.h"
#include "validate.h"

namespace sigmoid_attn {


namespace {

// The device the traced tensors stand for. torch.compile and torch.export trace with fake
// tensors whose kernels run on meta tensors, which cannot say it themselves: the Python fake
// implementations (_ops.py) pass FakeTensor.device.type as a code (0 CPU, 1 CUDA, else meta).
Backend backend_of(int64_t device_type) {
  switch (device_type) {
    case 0: return Backend::kCPU;
    case 1: return Backend::kCUDA;
    default: return Backend::kMeta;
  }
}

// On CUDA a call also needs a compiled kernel for its dtype, head dim and flags: the
// dispatcher's own choice raises the CUDA op's error (naming what is compiled). The SM count
// only picks among compiled tiles, so any positive value serves.
void check_cuda_forward_kernel(const ForwardProblem& p, bool is_causal, bool score_mod) {
  select_forward(p.dtype, p.D, is_causal, score_mod, p.varlen, p.max_q, p.Tq, p.B, p.Hq, 1);
}

void check_cuda_backward_kernel(const ForwardProblem& p, bool is_causal, bool score_mod) {
  select_backward(p.dtype, p.D, is_causal, score_mod, p.varlen, p.max_k, false);
}

}  // namespace

void check_forward_on(SIGMOID_ATTN_FORWARD_ARGS, int64_t device_type) {
  const Backend b = backend_of(device_type);
  const ForwardProblem p = check_forward(
      {q, k, v, seq_lens_q, seq_lens_k, is_causal, scale, sigmoid_bias, sigmoid_bias_tensor,
       score_mod},
      b);
  if (b == Backend::kCUDA) check_cuda_forward_kernel(p, is_causal, score_mod.has_value());
}

void check_backward_on(Tensor grad_out, SIGMOID_ATTN_FORWARD_ARGS, bool /*deterministic*/,
                       int64_t device_type) {
  const Backend b = backend_of(device_type);
  const ForwardProblem p = check_backward(
      grad_out,
      {q, k, v, seq_lens_q, seq_lens_k, is_causal, scale, sigmoid_bias, sigmoid_bias_tensor,
       score_mod},
      b);
  if (b == Backend::kCUDA) check_cuda_backward_kernel(p, is_causal, score_mod.has_value());
}

void check_forward_varlen_on(SIGMOID_ATTN_VARLEN_ARGS, int64_t device_type) {
  const Backend b = backend_of(device_type);
  const ForwardProblem p = check_forward_varlen(
      {q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, is_causal, scale,
       sigmoid_bias, sigmoid_bias_tensor, score_mod},
      b);
  if (b == Backend::kCUDA) check_cuda_forward_kernel(p, is_causal, score_mod.has_value());
}

void check_backward_varlen_on(Tensor grad_out, SIGMOID_ATTN_VARLEN_ARGS, bool /*deterministic*/,
                              int64_t device_type) {
  const Backend b = backend_of(device_type);
  const ForwardProblem p = check_backward_varlen(
      grad_out,
      {q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, is_causal, scale,
       sigmoid_bias, sigmoid_bias_tensor, score_mod},
      b);
  if (b == Backend::kCUDA) check_cuda_backward_kernel(p, is_causal, score_mod.has_value());
}

}  // namespace sigmoid_attn
