// Build facts exported by the ops library (plain C ABI, so Python through ctypes and C++ clients
// can read them without torch's headers).
#pragma once

#include <cstddef>
#include <cstdint>

#define SIGMOID_ATTN_API __attribute__((visibility("default")))

extern "C" {
SIGMOID_ATTN_API const char* sigmoid_attn_version();
SIGMOID_ATTN_API const char* sigmoid_attn_torch_build_version();
SIGMOID_ATTN_API const char* sigmoid_attn_triton_build_version();
SIGMOID_ATTN_API int sigmoid_attn_cuda_header_version();
SIGMOID_ATTN_API int sigmoid_attn_compiled_arch();
SIGMOID_ATTN_API int sigmoid_attn_num_kernels();
// Field access for kernel i (0 <= i < num_kernels); nullptr / -1 when out of range.
SIGMOID_ATTN_API const char* sigmoid_attn_kernel_name(int i);
SIGMOID_ATTN_API int sigmoid_attn_kernel_field(int i, const char* field);
// The name of kernel i's "kind" (variants.KINDS) or "dtype" (torch's name); nullptr otherwise.
SIGMOID_ATTN_API const char* sigmoid_attn_kernel_label(int i, const char* field);
// The dispatcher's forward choice for a problem, as a kernel index (-1: none compiled;
// sigmoid_attn_last_error() then says what this build compiled).
// gluon_forward: the call is one the Gluon forward covers beyond its variant (dispatch.h).
SIGMOID_ATTN_API int sigmoid_attn_select_forward_kernel(int dtype, int64_t head_dim, int causal,
                                                        int score_mod, int varlen, int64_t max_q,
                                                        int64_t Tq, int64_t B, int64_t Hq,
                                                        int sm_count, int warp_specialized,
                                                        int gluon_forward);
// The dispatcher's backward choice: the kernel that computes dK and dV (its kind says what runs
// beside it: dispatch.h's select_backward), as a kernel index (-1: none compiled).
// gluon_backward: the call is one the Gluon backward covers beyond its variant (switched on, may
// be nondeterministic, no lengths, no bias tensor, TMA-describable operands).
SIGMOID_ATTN_API int sigmoid_attn_select_backward_kernel(int dtype, int64_t head_dim, int causal,
                                                         int score_mod, int varlen,
                                                         int64_t max_k, int gluon_backward);
// Whether CUDA calls take the warp-specialized forward (default: tiles.json's
// fwd_ws_dispatch); set < 0 only reads. Returns the setting before the call.
SIGMOID_ATTN_API int sigmoid_attn_warp_specialized(int set);
// Whether CUDA calls take the Gluon forward where it covers the call (default: tiles.json's
// fwd_gluon_dispatch); set < 0 only reads. Returns the setting before the call.
SIGMOID_ATTN_API int sigmoid_attn_gluon_forward(int set);
// Whether CUDA backward calls take the Gluon backward where it covers the call and the caller
// did not ask for determinism (default: tiles.json's bwd_gluon_dispatch); set < 0 only reads.
// Returns the setting before the call.
SIGMOID_ATTN_API int sigmoid_attn_gluon_backward(int set);
// Whether the Gluon forward splits a call's last partial wave of tiles by key blocks over every
// SM: 1 (default) where a tile has enough key blocks for it to pay, 2 in every call with a
// partial wave, 0 never (SIGMOID_ATTN_SPLIT_WAVE=0/1/2 at load); set < 0 only reads. Returns
// the setting before the call.
SIGMOID_ATTN_API int sigmoid_attn_split_wave(int set);
// The Gluon forward's tile queue (1 on, 0 off, < 0 reads only); returns the setting before.
SIGMOID_ATTN_API int sigmoid_attn_tile_queue(int set);
}

namespace sigmoid_attn {
// This thread's sigmoid_attn_last_error() (c_api.cpp).
void set_last_error(const char* message);
}  // namespace sigmoid_attn
