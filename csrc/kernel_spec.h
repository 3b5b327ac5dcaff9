// The compiled-kernel catalog: one KernelSpec per entry of triton_src/variants.py.
// kernels_generated.cpp (written by triton_src/aot.py at build time) defines the table.
#pragma once

#include <cstddef>

namespace sigmoid_attn {

enum class DType : int { kFloat16 = 0, kBFloat16 = 1, kFloat32 = 2 };
// kForwardWS: the warp-specialized forward (triton_src/sigmoid_attn_fwd_ws.py), its own ABI.
// kBackwardDkDvDq: the one-pass backward (dkdv plus dQ by fp32 TMA reductions), dkdv's ABI with
// the fp32 dQ buffer and its strides after stride_smt.
enum class KernelKind : int {
  kForward = 0,
  kBackwardDkDv = 1,
  kBackwardDq = 2,
  kForwardWS = 3,
  kBackwardDkDvDq = 4,
};

// BIAS_MODE values of the kernel (triton_src/sigmoid_attn_fwd.py).
enum BiasMode : int { kBiasDefault = 0, kBiasScalar = 1, kBiasTensor = 2 };

// KernelSpec::min_t of the small-problem bucket (variants.SMALL).
constexpr int kSmallProblem = -1;

struct KernelSpec {
  const char* name;            // e.g. fwd_bf16_d128_causal_m128n64w8s3
  const char* entry;           // entry symbol inside the cubin
  const unsigned char* image;  // cubin bytes
  size_t image_size;
  KernelKind kind;
  DType dtype;
  int head_dim;
  bool causal;
  bool score_mod;
  bool varlen;                 // packed [total, H, D] tensors with cu_seqlens
  int block_m;
  int block_n;
  int num_warps;
  int num_stages;
  int min_t;                  // dispatched when the sequence length is >= min_t (tile buckets);
                              // kSmallProblem: the latency tile for grids smaller than the GPU
  int shared_bytes;           // dynamic shared memory the launch must provide
  int num_params;             // the kernel's own parameters (variants.PARAMS[kind])
  int num_hidden_params;      // pointers this Triton version appends after them
  int global_scratch_size;    // bytes per program; 0 = none
  int global_scratch_align;
  int profile_scratch_size;   // bytes per program; 0 = none
  int profile_scratch_align;
};

extern const KernelSpec kKernels[];
extern const int kNumKernels;
extern const char* const kTritonVersion;
extern const int kCompiledArch;
// tiles.json's fwd_ws_dispatch: whether the dispatcher takes the warp-specialized forward by
// default (SIGMOID_ATTN_WARP_SPECIALIZED=0/1 overrides it, read once).
extern const bool kWarpSpecializedDispatch;
// tiles.json's bwd_atomic_dq_dispatch: whether the backward takes the one-pass kernel
// (kBackwardDkDvDq) by default (SIGMOID_ATTN_ATOMIC_DQ=0/1 overrides it, read once).
extern const bool kAtomicDqDispatch;

}  // namespace sigmoid_attn
