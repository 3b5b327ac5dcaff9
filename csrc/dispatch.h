// Variant selection: (kind, dtype, head_dim, causal, score_mod, varlen, sequence length) ->
// index into kKernels. The length picks among tile buckets (KernelSpec::min_t) of one variant.
#pragma once

#include <cstdint>

#include <torch/headeronly/core/ScalarType.h>

#include "kernel_spec.h"

namespace sigmoid_attn {

// torch's ScalarType of a kernel dtype (-Wswitch: a dtype added to variants.DTYPE_TABLE needs
// its case here).
constexpr torch::headeronly::ScalarType scalar_type(DType d) {
  switch (d) {
    case DType::kFloat16: return torch::headeronly::ScalarType::Half;
    case DType::kBFloat16: return torch::headeronly::ScalarType::BFloat16;
    case DType::kFloat32: return torch::headeronly::ScalarType::Float;
  }
  return torch::headeronly::ScalarType::Undefined;
}

// The kernel dtype code (DType) of a ScalarType, -1 where no kernel takes it.
constexpr int dtype_code(torch::headeronly::ScalarType t) {
  for (int i = 0; i < kNumDTypes; ++i) {
    if (scalar_type(static_cast<DType>(i)) == t) return i;
  }
  return -1;
}

// O(1) table lookup built once from the generated catalog. Throws, naming the supported
// set, when no compiled kernel matches.
int select_kernel(KernelKind kind, torch::headeronly::ScalarType dtype, int64_t head_dim,
                  bool causal, bool score_mod, bool varlen, int64_t seq_len);
// The same lookup, -1 where nothing matches.
int find_kernel(KernelKind kind, torch::headeronly::ScalarType dtype, int64_t head_dim,
                bool causal, bool score_mod, bool varlen, int64_t seq_len);

// Programs along the forward grid's x axis for a kernel: cdiv(Tq, block_m) dense, or one per
// tile of real tokens plus at most one idle per sequence when packed (Tq = total tokens).
inline unsigned forward_grid_x(const KernelSpec& s, bool varlen, int64_t Tq, int64_t B) {
  return varlen ? static_cast<unsigned>(Tq / s.block_m + B + 1)
                : static_cast<unsigned>((Tq + s.block_m - 1) / s.block_m);
}

// The forward kernel of a problem: the length's tile (select_kernel on max_q), or the variant's
// small-problem tile when the length's tile would launch fewer programs than the GPU has SMs
// (one partial wave: the time is one program's key loop, so more, shorter programs win).
// warp_specialized: take the variant's warp-specialized kernel (KernelKind::kForwardWS) where
// one is compiled for the length, instead of the length's tile (never instead of the
// small-problem tile).
// gluon: the call is one the Gluon forward covers beyond its variant flags (switched on, no
// bias tensor, causal only with Tq == Tk, operands TMA can describe: ops_cuda.cpp's
// gluon_operands); take it (persistent: KernelKind::kForwardGluonPadded where the call has
// lengths, kForwardGluon where it has none) where one is compiled for the variant and it has at
// least as many tiles as the GPU has SMs.
int select_forward(torch::headeronly::ScalarType dtype, int64_t head_dim, bool causal,
                   bool score_mod, bool varlen, int64_t max_q, int64_t Tq, int64_t B,
                   int64_t Hq, int sm_count, bool warp_specialized = false, bool gluon = false,
                   bool lengths = false);

// The kernel that computes a backward's dK and dV (the rest follows from its kind: kBackwardDkDv
// runs beside kBackwardDq; kBackwardGluon(Padded) sums dQ itself, then casts it with kDqCast).
// gluon: the call is one the Gluon backward covers beyond its variant flags (switched on, may be
// nondeterministic, lengths for both queries and keys or none, no bias tensor, operands TMA can
// describe: ops_cuda_bwd.cpp's gluon_operands); take it (kBackwardGluonPadded where the call has
// lengths) where it and its dQ cast are compiled for the variant.
int select_backward(torch::headeronly::ScalarType dtype, int64_t head_dim, bool causal,
                    bool score_mod, bool varlen, int64_t max_k, bool gluon,
                    bool lengths = false);

// Whether the dispatcher may take warp-specialized forward kernels: tiles.json's default, or
// SIGMOID_ATTN_WARP_SPECIALIZED=0/1 (read once), or the last set_warp_specialized().
bool warp_specialized_dispatch();
// Returns the previous setting.
bool set_warp_specialized_dispatch(bool on);

// Whether the dispatcher may take the Gluon forward: tiles.json's fwd_gluon_dispatch, or
// SIGMOID_ATTN_GLUON_FORWARD=0/1 (read once), or the last set_gluon_forward_dispatch().
bool gluon_forward_dispatch();
// Returns the previous setting.
bool set_gluon_forward_dispatch(bool on);

// Whether the Gluon forward splits the tiles past a call's last whole wave over the SMs by key
// blocks (variants of two consumer warpgroups up to 128 columns, dense, not causal): 1 (the
// default) where the keys are long enough for it to pay, 2 in every call with a partial wave
// (tests), 0 never; SIGMOID_ATTN_SPLIT_WAVE=0/1/2 (read once), or the last
// set_split_wave_dispatch().
int split_wave_dispatch();
// Returns the previous setting.
int set_split_wave_dispatch(int mode);

// Whether the Gluon forward's programs take their tiles from a queue (a counter on the device,
// zeroed on the stream before the launch) instead of the static walk, in padded and packed
// calls of more tiles than programs: a program given lighter tiles takes more of them.
// SIGMOID_ATTN_TILE_QUEUE=0/1 (read once), or the last set_tile_queue_dispatch(); on by default.
bool tile_queue_dispatch();
// Returns the previous setting.
bool set_tile_queue_dispatch(bool on);

// Whether the backward may take the Gluon kernel (KernelKind::kBackwardGluon: dQ summed by fp32
// TMA reductions, not bitwise deterministic) for the calls it covers: tiles.json's
// bwd_gluon_dispatch, or SIGMOID_ATTN_GLUON_BACKWARD=0/1 (read once), or the last
// set_gluon_backward_dispatch().
bool gluon_backward_dispatch();
// Returns the previous setting.
bool set_gluon_backward_dispatch(bool on);

}  // namespace sigmoid_attn
