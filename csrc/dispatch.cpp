#include "dispatch.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "check.h"

namespace sigmoid_attn {

namespace {

// kMaxHeadDim, kMaxHeadDims, kMaxBuckets: sigmoid_attn_constants.h (variants.DISPATCH_*); the
// generated table static_asserts that the catalog fits them.

// Tile buckets of one variant, ascending min_t: an optional small-problem bucket
// (kSmallProblem), then length buckets from min_t == 0.
struct Buckets {
  int16_t n = 0;
  int16_t kernel[kMaxBuckets];
  int32_t min_t[kMaxBuckets];
};

// Head dims a generic kernel serves are multiples of this (variants.HEAD_DIM_MULTIPLE: the
// kernels' D masks assume it).
constexpr int kHeadDimMultiple = 8;

struct KernelTable {
  // head_dim -> its position among the compiled head dims, or -1
  std::array<int8_t, kMaxHeadDim + 1> dim_slot;
  // head_dim -> the position of the generic kernels that serve it (the smallest BLOCK_D >= it),
  // or -1: multiples of kHeadDimMultiple only, and only where dim_slot has none
  std::array<int8_t, kMaxHeadDim + 1> generic_slot;
  int max_generic = 0;  // the largest head dim the generic kernels serve (0: none compiled)
  // [kind][dtype][head dim position][causal][score_mod][varlen] -> buckets
  std::array<Buckets, kNumKinds * kNumDTypes * kMaxHeadDims * 2 * 2 * 2> index;
  std::string head_dims;  // "32, 64, ..." for error messages
  std::string dtypes;     // "float16, bfloat16, ..."
  std::array<bool, kNumDTypes> dtype_built{};
  std::vector<int16_t> small;  // kernel -> its variant's small-problem kernel, or -1

  static int slot(int kind, int dtype, int dim, bool causal, bool mod, bool varlen) {
    return ((((kind * kNumDTypes + dtype) * kMaxHeadDims + dim) * 2 + causal) * 2 + mod) * 2 +
           varlen;
  }

  KernelTable() {
    std::set<int> dims, dts;
    dim_slot.fill(-1);
    generic_slot.fill(-1);
    std::array<int8_t, kMaxHeadDim + 1> block_slot;  // a generic kernel's BLOCK_D -> position
    block_slot.fill(-1);
    small.assign(kNumKernels, -1);
    int n_dims = 0;
    for (int i = 0; i < kNumKernels; ++i) {
      const KernelSpec& k = kKernels[i];
      auto& slots = k.runtime_head_dim ? block_slot : dim_slot;
      if (slots[k.head_dim] < 0) slots[k.head_dim] = static_cast<int8_t>(n_dims++);
      Buckets& b = index[slot(static_cast<int>(k.kind), static_cast<int>(k.dtype),
                              slots[k.head_dim], k.causal, k.score_mod, k.varlen)];
      int pos = b.n++;  // insertion sort by min_t
      while (pos > 0 && b.min_t[pos - 1] > k.min_t) {
        b.min_t[pos] = b.min_t[pos - 1];
        b.kernel[pos] = b.kernel[pos - 1];
        --pos;
      }
      b.min_t[pos] = k.min_t;
      b.kernel[pos] = static_cast<int16_t>(i);
      if (k.kind == KernelKind::kForward && !k.runtime_head_dim) {
        dims.insert(k.head_dim);
        dts.insert(static_cast<int>(k.dtype));
        dtype_built[static_cast<int>(k.dtype)] = true;
      }
      if (k.runtime_head_dim) max_generic = std::max(max_generic, k.head_dim);
    }
    // A head dim without kernels of its own: the generic ones of the smallest BLOCK_D >= it.
    for (int e = kHeadDimMultiple; e <= max_generic; e += kHeadDimMultiple) {
      if (dim_slot[e] >= 0) continue;
      int d = e;
      while (block_slot[d] < 0) ++d;  // (ends at max_generic at the latest)
      generic_slot[e] = block_slot[d];
    }
    for (int d : dims) head_dims += (head_dims.empty() ? "" : ", ") + std::to_string(d);
    if (max_generic > 0) {
      head_dims = "any multiple of " + std::to_string(kHeadDimMultiple) + " up to " +
                  std::to_string(max_generic) + " (compiled: " + head_dims +
                  "; the others by the generic kernels)";
    }
    for (int d : dts) dtypes += std::string(dtypes.empty() ? "" : ", ") + kDTypeNames[d];
    for (int i = 0; i < kNumKernels; ++i) {
      const KernelSpec& k = kKernels[i];
      const auto& slots = k.runtime_head_dim ? block_slot : dim_slot;
      if (k.head_dim > kMaxHeadDim || slots[k.head_dim] < 0) continue;
      const Buckets& b = index[slot(static_cast<int>(k.kind), static_cast<int>(k.dtype),
                                    slots[k.head_dim], k.causal, k.score_mod, k.varlen)];
      if (b.n > 0 && b.min_t[0] == kSmallProblem && k.min_t != kSmallProblem) small[i] = b.kernel[0];
    }
  }

  // The slot of the kernels serving head_dim: its own, else the generic ones', else -1.
  int dim_position(int64_t head_dim) const {
    if (head_dim <= 0 || head_dim > kMaxHeadDim) return -1;
    return dim_slot[head_dim] >= 0 ? dim_slot[head_dim] : generic_slot[head_dim];
  }
};

const KernelTable& table() {
  static const KernelTable t;
  return t;
}

// The small-problem (latency) tile of kernel's variant (min_t == kSmallProblem), or -1.
int select_small_kernel(int kernel) {
  const KernelTable& t = table();
  return kernel >= 0 && kernel < static_cast<int>(t.small.size()) ? t.small[kernel] : -1;
}

}  // namespace

int find_kernel(KernelKind kind, torch::headeronly::ScalarType dtype, int64_t head_dim,
                bool causal, bool score_mod, bool varlen, int64_t seq_len) {
  const KernelTable& t = table();
  const int dt = dtype_code(dtype);
  int idx = -1;
  const int pos = t.dim_position(head_dim);
  if (dt >= 0 && pos >= 0) {
    const Buckets& b =
        t.index[KernelTable::slot(static_cast<int>(kind), dt, pos, causal, score_mod, varlen)];
    for (int i = 0; i < b.n && b.min_t[i] <= seq_len; ++i) {
      if (b.min_t[i] != kSmallProblem) idx = b.kernel[i];
    }
  }
  return idx;
}

int select_kernel(KernelKind kind, torch::headeronly::ScalarType dtype, int64_t head_dim,
                  bool causal, bool score_mod, bool varlen, int64_t seq_len) {
  const int idx = find_kernel(kind, dtype, head_dim, causal, score_mod, varlen, seq_len);
  const KernelTable& t = table();
  if (idx >= 0) return idx;
  // Name what is missing: the head dim or the dtype (none of this build's kernels), else the
  // combination of flags; and what this build compiled.
  const int dt = dtype_code(dtype);
  const bool dim_built = t.dim_position(head_dim) >= 0;
  const bool dtype_built = dt >= 0 && t.dtype_built[dt];
  const std::string dim = "head_dim=" + std::to_string(head_dim);
  const std::string type = dt >= 0 ? kDTypeNames[dt] : torch::headeronly::toString(dtype);
  std::string what = dim + " in " + type;
  if (dim_built && !dtype_built) {
    what = "dtype " + type;
  } else if (!dim_built && dtype_built) {
    what = dim;
  } else if (dim_built && dtype_built) {
    what += std::string(" with is_causal=") + (causal ? "true" : "false") +
            ", score_mod=" + (score_mod ? "true" : "false") +
            ", varlen=" + (varlen ? "true" : "false");
  }
  SA_CHECK(false, "sigmoid_attention: no CUDA kernel is compiled for ", what,
           "; head dims served: ", t.head_dims, " in ", t.dtypes,
           kBuildSubset[0] != '\0' ? " (a partial build: " : "", kBuildSubset,
           kBuildSubset[0] != '\0' ? "; rebuild without these CMake options for the rest)" : "");
  return idx;
}

namespace {

// The Gluon kernel of `kind` for head_dim: the one compiled for it, else the narrowest one
// compiled for a larger head dim up to the next power of two (over that power of two's boxes
// its descriptors read the columns past head_dim as zeros, which add nothing to the scores, and
// its stores and reductions drop them; a kernel of a head dim between two, such as 80, runs its
// score products over its own columns only) where head_dim fills at least min_fill of the
// power of two's columns and is a multiple of 8 (TMA's 16-byte strides); -1 otherwise.
int find_gluon(KernelKind kind, torch::headeronly::ScalarType dtype, int64_t head_dim,
               bool causal, bool score_mod, bool varlen, int64_t seq_len, double min_fill) {
  const int own = find_kernel(kind, dtype, head_dim, causal, score_mod, varlen, seq_len);
  if (own >= 0 || head_dim <= 0 || head_dim % 8 != 0) return own;
  int64_t block = 8;
  while (block < head_dim) block *= 2;
  if (static_cast<double>(head_dim) < min_fill * static_cast<double>(block)) return -1;
  for (int64_t d = head_dim + 8; d <= block; d += 8) {
    const int k = find_kernel(kind, dtype, d, causal, score_mod, varlen, seq_len);
    if (k >= 0) return k;
  }
  return -1;
}

}  // namespace

int select_forward(torch::headeronly::ScalarType dtype, int64_t head_dim, bool causal,
                   bool score_mod, bool varlen, int64_t max_q, int64_t Tq, int64_t B,
                   int64_t Hq, int sm_count, bool warp_specialized, bool gluon,
                   bool lengths) {
  const int kernel =
      select_kernel(KernelKind::kForward, dtype, head_dim, causal, score_mod, varlen, max_q);
  const auto programs = [&](int k) {
    return uint64_t(forward_grid_x(kKernels[k], varlen, Tq, B)) * Hq * (varlen ? 1 : B);
  };
  if (gluon) {
    // Persistent, one program per tile up to the SM count: under one wave of its 128-row tiles
    // the SMs it leaves idle cost more than its schedule gains, and there the small-problem
    // tile (more, shorter programs) is the better choice. programs(g) counts its tiles.
    const int g = find_gluon(lengths ? KernelKind::kForwardGluonPadded
                                     : KernelKind::kForwardGluon,
                             dtype, head_dim, causal, score_mod, varlen, max_q,
                             kGluonForwardMinFill);
    if (g >= 0 && programs(g) >= uint64_t(sm_count)) return g;
  }
  if (programs(kernel) < uint64_t(sm_count)) {
    const int small = select_small_kernel(kernel);
    if (small >= 0) return small;
  }
  if (warp_specialized) {
    const int ws = find_kernel(KernelKind::kForwardWS, dtype, head_dim, causal, score_mod,
                               varlen, max_q);
    // Its tiles can be taller (256 rows): only where its own grid still fills the GPU.
    if (ws >= 0 && programs(ws) >= uint64_t(sm_count)) return ws;
  }
  return kernel;
}

int select_backward(torch::headeronly::ScalarType dtype, int64_t head_dim, bool causal,
                    bool score_mod, bool varlen, int64_t max_k, bool gluon, bool lengths) {
  if (gluon) {
    const int g = find_gluon(lengths ? KernelKind::kBackwardGluonPadded
                                     : KernelKind::kBackwardGluon,
                             dtype, head_dim, causal, score_mod, varlen, max_k,
                             kGluonBackwardMinFill);
    // (one cast, compiled under the dense key, serves causal calls too)
    if (g >= 0 && find_kernel(KernelKind::kDqCast, dtype, block_d(kKernels[g]), false, false,
                              false, max_k) >= 0) {
      return g;
    }
  }
  return select_kernel(KernelKind::kBackwardDkDv, dtype, head_dim, causal, score_mod, varlen,
                       max_k);
}

namespace {

// A dispatch switch's first value: its environment variable if set (0/1, or up to max_value
// for a switch of more settings: its first digit, clamped), else the default that tiles.json
// compiled in.
int initial_switch(const char* env_name, bool compiled_default, int max_value = 1) {
  const char* env = std::getenv(env_name);
  if (env != nullptr && env[0] != '\0') {
    if (env[0] == '0') return 0;
    return env[0] > '1' && env[0] <= '9' ? std::min(env[0] - '0', max_value) : 1;
  }
  return compiled_default ? 1 : 0;
}

std::atomic<int>& ws_dispatch_state() {
  static std::atomic<int> state{
      initial_switch("SIGMOID_ATTN_WARP_SPECIALIZED", kWarpSpecializedDispatch)};
  return state;
}

std::atomic<int>& gluon_dispatch_state() {
  static std::atomic<int> state{
      initial_switch("SIGMOID_ATTN_GLUON_FORWARD", kGluonForwardDispatch)};
  return state;
}

std::atomic<int>& gluon_backward_state() {
  static std::atomic<int> state{
      initial_switch("SIGMOID_ATTN_GLUON_BACKWARD", kGluonBackwardDispatch)};
  return state;
}

std::atomic<int>& split_wave_state() {
  // (0, 1, or 2: every call with a partial wave, whatever its keys)
  static std::atomic<int> state{initial_switch("SIGMOID_ATTN_SPLIT_WAVE", true, 2)};
  return state;
}

std::atomic<int>& tile_queue_state() {
  static std::atomic<int> state{initial_switch("SIGMOID_ATTN_TILE_QUEUE", true)};
  return state;
}

}  // namespace

bool tile_queue_dispatch() { return tile_queue_state().load(std::memory_order_relaxed) != 0; }

bool set_tile_queue_dispatch(bool on) {
  return tile_queue_state().exchange(on ? 1 : 0, std::memory_order_relaxed) != 0;
}

int split_wave_dispatch() { return split_wave_state().load(std::memory_order_relaxed); }

int set_split_wave_dispatch(int mode) {
  return split_wave_state().exchange(mode <= 0 ? 0 : mode >= 2 ? 2 : 1,
                                     std::memory_order_relaxed);
}

bool warp_specialized_dispatch() {
  return ws_dispatch_state().load(std::memory_order_relaxed) != 0;
}

bool set_warp_specialized_dispatch(bool on) {
  return ws_dispatch_state().exchange(on ? 1 : 0, std::memory_order_relaxed) != 0;
}

bool gluon_backward_dispatch() {
  return gluon_backward_state().load(std::memory_order_relaxed) != 0;
}

bool set_gluon_backward_dispatch(bool on) {
  return gluon_backward_state().exchange(on ? 1 : 0, std::memory_order_relaxed) != 0;
}

bool gluon_forward_dispatch() {
  return gluon_dispatch_state().load(std::memory_order_relaxed) != 0;
}

bool set_gluon_forward_dispatch(bool on) {
  return gluon_dispatch_state().exchange(on ? 1 : 0, std::memory_order_relaxed) != 0;
}

}  // namespace sigmoid_attn
