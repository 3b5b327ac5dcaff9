// The compiled-kernel catalog: one KernelSpec per entry of triton_src/variants.py.
// kernels_generated.cpp (written by triton_src/aot.py at build time) defines the table.
#pragma once

#include <cstddef>

namespace sigmoid_attn {

enum class DType : int { kFloat16 = 0, kBFloat16 = 1, kFloat32 = 2 };
// kForwardWS: the warp-specialized forward (triton_src/sigmoid_attn_fwd_ws.py), its own ABI.
// kBackwardDkDvDq: the one-pass backward (dkdv plus dQ by fp32 TMA reductions), dkdv's ABI with
// the fp32 dQ buffer and its strides after stride_smt.
// kForwardGluon: the Gluon forward (triton_src/sigmoid_attn_fwd_gluon.py): host TMA descriptors
// (KernelSpec::tensor_maps) and four scalars, dense non-causal calls only.
enum class KernelKind : int {
  kForward = 0,
  kBackwardDkDv = 1,
  kBackwardDq = 2,
  kForwardWS = 3,
  kBackwardDkDvDq = 4,
  kForwardGluon = 5,
};

// BIAS_MODE values of the kernel (triton_src/sigmoid_attn_fwd.py).
enum BiasMode : int { kBiasDefault = 0, kBiasScalar = 1, kBiasTensor = 2 };

// KernelSpec::min_t of the small-problem bucket (variants.SMALL).
constexpr int kSmallProblem = -1;

// A TMA descriptor parameter of a kernel, as aot.py read it from the compiled metadata: the
// by-value CUtensorMap at PTX parameter `param`, followed by the descriptor's kTensorMapRank
// shape (u32) and kTensorMapRank stride (u64, elements) scalars; and how the host encodes it
// (cuTensorMapEncodeTiled).
constexpr int kTensorMapRank = 3;
constexpr int kMaxTensorMaps = 4;
struct TensorMapSpec {
  int param;
  unsigned box[kTensorMapRank];  // outermost first, as Triton's block_size
  int swizzle;                   // CUtensorMapSwizzle
  int elem_bytes;
  int data_type;                 // CUtensorMapDataType
};

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
  int num_tensor_maps;        // descriptor parameters (kForwardGluon: q, k, v, o), in order
  TensorMapSpec tensor_maps[kMaxTensorMaps];
};

extern const KernelSpec kKernels[];
extern const int kNumKernels;
extern const char* const kTritonVersion;
extern const int kCompiledArch;
// tiles.json's fwd_ws_dispatch: whether the dispatcher takes the warp-specialized forward by
// default (SIGMOID_ATTN_WARP_SPECIALIZED=0/1 overrides it, read once).
extern const bool kWarpSpecializedDispatch;
// tiles.json's fwd_gluon_dispatch: whether the dispatcher takes the Gluon forward for the calls it
// covers (SIGMOID_ATTN_GLUON_FORWARD=0/1 overrides it, read once).
extern const bool kGluonForwardDispatch;
// tiles.json's bwd_atomic_dq_dispatch: whether the backward takes the one-pass kernel
// (kBackwardDkDvDq) by default (SIGMOID_ATTN_ATOMIC_DQ=0/1 overrides it, read once).
extern const bool kAtomicDqDispatch;

}  // namespace sigmoid_attn
