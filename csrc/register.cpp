// Op schemas (declared once) and their per-backend implementations.
#include <torch/csrc/stable/library.h>

#include <optional>
#include <utility>

#include "ops.h"

#define SIGMOID_ATTN_FORWARD_SCHEMA                                                           \
  "Tensor q, Tensor k, Tensor v, Tensor? seq_lens_q=None, Tensor? seq_lens_k=None, "          \
  "bool is_causal=False, float? scale=None, float? sigmoid_bias=None, "                       \
  "Tensor? sigmoid_bias_tensor=None, Tensor? score_mod=None"

#define SIGMOID_ATTN_VARLEN_SCHEMA                                                            \
  "Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor cu_seqlens_k, int max_seqlen_q, "  \
  "int max_seqlen_k, bool is_causal=False, float? scale=None, float? sigmoid_bias=None, "       \
  "Tensor? sigmoid_bias_tensor=None, Tensor? score_mod=None"

namespace sigmoid_attn {
namespace {

// forward.plain: the common call (q, k, v, is_causal) as its own 4-argument overload. The
// Python layer takes it when nothing else is set: torch.ops parses, fills and boxes every
// argument of a schema, and 4 arguments instead of 10 cost measurably less per call.
template <Tensor (*Forward)(SIGMOID_ATTN_FORWARD_ARGS)>
Tensor plain(Tensor q, Tensor k, Tensor v, bool is_causal) {
  return Forward(std::move(q), std::move(k), std::move(v), std::nullopt, std::nullopt, is_causal,
                 std::nullopt, std::nullopt, std::nullopt, std::nullopt);
}

}  // namespace
}  // namespace sigmoid_attn

STABLE_TORCH_LIBRARY(sigmoid_attn, m) {
  m.def("forward(" SIGMOID_ATTN_FORWARD_SCHEMA ") -> Tensor");
  m.def("forward.plain(Tensor q, Tensor k, Tensor v, bool is_causal=False) -> Tensor");
  // Gradients of q, k, v and (float32 [B, Tk], empty without score_mod) of score_mod.
  // deterministic: bitwise-reproducible kernels only (torch's deterministic mode, which the
  // stable ABI cannot read: the caller passes it; ops.h).
  m.def("backward(Tensor grad_out, " SIGMOID_ATTN_FORWARD_SCHEMA
        ", bool deterministic=False) -> (Tensor, Tensor, Tensor, Tensor)");
  // Packed variable-length batches (FlashAttention's cu_seqlens convention).
  m.def("forward_varlen(" SIGMOID_ATTN_VARLEN_SCHEMA ") -> Tensor");
  m.def("backward_varlen(Tensor grad_out, " SIGMOID_ATTN_VARLEN_SCHEMA
        ", bool deterministic=False) -> (Tensor, Tensor, Tensor, Tensor)");
  // Each op's validation as the device `device_type` (0 CPU, 1 CUDA) performs it, on meta
  // tensors: what the ops' fake implementations (python/sigmoid_attn/_ops.py) run, so that
  // torch.compile and torch.export reject at trace time exactly what the device would.
  m.def("_check_forward(" SIGMOID_ATTN_FORWARD_SCHEMA ", int device_type=2) -> ()");
  m.def("_check_backward(Tensor grad_out, " SIGMOID_ATTN_FORWARD_SCHEMA
        ", bool deterministic=False, int device_type=2) -> ()");
  m.def("_check_forward_varlen(" SIGMOID_ATTN_VARLEN_SCHEMA ", int device_type=2) -> ()");
  m.def("_check_backward_varlen(Tensor grad_out, " SIGMOID_ATTN_VARLEN_SCHEMA
        ", bool deterministic=False, int device_type=2) -> ()");
}

STABLE_TORCH_LIBRARY_IMPL(sigmoid_attn, CPU, m) {
  m.impl("forward", TORCH_BOX(&sigmoid_attn::forward_cpu));
  m.impl("forward.plain", TORCH_BOX(&sigmoid_attn::plain<&sigmoid_attn::forward_cpu>));
  m.impl("backward", TORCH_BOX(&sigmoid_attn::backward_cpu));
  m.impl("forward_varlen", TORCH_BOX(&sigmoid_attn::forward_varlen_cpu));
  m.impl("backward_varlen", TORCH_BOX(&sigmoid_attn::backward_varlen_cpu));
}

STABLE_TORCH_LIBRARY_IMPL(sigmoid_attn, CUDA, m) {
  m.impl("forward", TORCH_BOX(&sigmoid_attn::forward_cuda));
  m.impl("forward.plain", TORCH_BOX(&sigmoid_attn::plain<&sigmoid_attn::forward_cuda>));
  m.impl("backward", TORCH_BOX(&sigmoid_attn::backward_cuda));
  m.impl("forward_varlen", TORCH_BOX(&sigmoid_attn::forward_varlen_cuda));
  m.impl("backward_varlen", TORCH_BOX(&sigmoid_attn::backward_varlen_cuda));
}

// Meta: only the validation ops. The ops themselves get their shapes from Python fake
// implementations (python/sigmoid_attn/_ops.py), which see the device the fake tensors stand for
// (a C++ Meta kernel sees meta tensors) and call _check_* with it.
STABLE_TORCH_LIBRARY_IMPL(sigmoid_attn, Meta, m) {
  m.impl("_check_forward", TORCH_BOX(&sigmoid_attn::check_forward_on));
  m.impl("_check_backward", TORCH_BOX(&sigmoid_attn::check_backward_on));
  m.impl("_check_forward_varlen", TORCH_BOX(&sigmoid_attn::check_forward_varlen_on));
  m.impl("_check_backward_varlen", TORCH_BOX(&sigmoid_attn::check_backward_varlen_on));
}
