/* sigmoid_attn's C entry points: the forward ops without the torch dispatcher.
 *
 * For C++ services that link libsigmoid_attn_ops.so and call attention on their own tensors:
 * the call validates, allocates the output and launches on the current CUDA stream exactly as
 * torch.ops.sigmoid_attn.forward does (same code), but skips the dispatcher's boxing of ten
 * arguments into IValues and back. No autograd: the output never requires grad. Inference only.
 *
 * Tensors are AOTInductor handles (AtenTensorHandle, torch/csrc/inductor/aoti_torch/c/shim.h),
 * i.e. at::Tensor* under torch's stable C ABI. Inputs are borrowed; a null handle is "not given"
 * for the optional ones. On success *out is a new handle the caller owns (release it with
 * aoti_torch_delete_tensor_object). Every function returns 0 on success; on failure, nonzero and
 * sigmoid_attn_last_error() holds the message (the same text the Python op raises), per thread.
 *
 * C++ callers with at::Tensor use sigmoid_attn/sigmoid_attn.h, which wraps these.
 */
#ifndef SIGMOID_ATTN_C_API_H_
#define SIGMOID_ATTN_C_API_H_

#include <stdint.h>

#include <torch/csrc/inductor/aoti_torch/c/shim.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SIGMOID_ATTN_C_API_VERSION 2

#if defined(__GNUC__)
#define SIGMOID_ATTN_C_EXPORT __attribute__((visibility("default")))
#else
#define SIGMOID_ATTN_C_EXPORT
#endif

/* SIGMOID_ATTN_C_API_VERSION of the loaded library (1: forward, forward_varlen; 2: + *_out). */
SIGMOID_ATTN_C_EXPORT int32_t sigmoid_attn_c_api_version(void);

/* The message of this thread's last failed call ("" if none). Valid until its next call. */
SIGMOID_ATTN_C_EXPORT const char* sigmoid_attn_last_error(void);

/* torch.ops.sigmoid_attn.forward: q [B, Tq, Hq, D], k/v [B, Tk, Hkv, D] -> out [B, Tq, Hq, D].
 * seq_lens_q/k: int32 [B] or null. scale, sigmoid_bias: pointer to the value or null (default
 * 1/sqrt(D), no bias). sigmoid_bias_tensor: floating [B] or null. score_mod: [B, Tk] or null. */
SIGMOID_ATTN_C_EXPORT int32_t sigmoid_attn_forward(
    AtenTensorHandle q, AtenTensorHandle k, AtenTensorHandle v, AtenTensorHandle seq_lens_q,
    AtenTensorHandle seq_lens_k, int32_t is_causal, const double* scale,
    const double* sigmoid_bias, AtenTensorHandle sigmoid_bias_tensor, AtenTensorHandle score_mod,
    AtenTensorHandle* out);

/* torch.ops.sigmoid_attn.forward_varlen: packed q [total_q, Hq, D], k/v [total_k, Hkv, D],
 * cu_seqlens_q/k int32 [B + 1] -> out [total_q, Hq, D]. score_mod: [total_k] or null. */
SIGMOID_ATTN_C_EXPORT int32_t sigmoid_attn_forward_varlen(
    AtenTensorHandle q, AtenTensorHandle k, AtenTensorHandle v, AtenTensorHandle cu_seqlens_q,
    AtenTensorHandle cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k, int32_t is_causal,
    const double* scale, const double* sigmoid_bias, AtenTensorHandle sigmoid_bias_tensor,
    AtenTensorHandle score_mod, AtenTensorHandle* out);

/* The same two, written into the caller's `out` (borrowed): a contiguous tensor of the output's
 * shape, q's dtype and device, 16-byte aligned, sharing no memory with q, k or v. No allocation
 * at all on this path (an inference service reusing its buffers). Returns 0 or nonzero. */
SIGMOID_ATTN_C_EXPORT int32_t sigmoid_attn_forward_out(
    AtenTensorHandle q, AtenTensorHandle k, AtenTensorHandle v, AtenTensorHandle seq_lens_q,
    AtenTensorHandle seq_lens_k, int32_t is_causal, const double* scale,
    const double* sigmoid_bias, AtenTensorHandle sigmoid_bias_tensor, AtenTensorHandle score_mod,
    AtenTensorHandle out);

SIGMOID_ATTN_C_EXPORT int32_t sigmoid_attn_forward_varlen_out(
    AtenTensorHandle q, AtenTensorHandle k, AtenTensorHandle v, AtenTensorHandle cu_seqlens_q,
    AtenTensorHandle cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k, int32_t is_causal,
    const double* scale, const double* sigmoid_bias, AtenTensorHandle sigmoid_bias_tensor,
    AtenTensorHandle score_mod, AtenTensorHandle out);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif /* SIGMOID_ATTN_C_API_H_ */
