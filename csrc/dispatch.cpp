#include "dispatch.h"

#include <array>
#include <set>
#include <string>

#include "check.h"

namespace sigmoid_attn {

namespace {

constexpr int kMaxHeadDim = 512;
constexpr int kKinds = 3;

struct KernelTable {
  // [kind][dtype][head_dim][causal][score_mod] -> kernel index or -1
  std::array<int16_t, kKinds * 2 * (kMaxHeadDim + 1) * 2 * 2> index;
  std::string head_dims;  // "32, 64, ..." for error messages

  static int slot(int kind, int dtype, int64_t hd, bool causal, bool mod) {
    return (((kind * 2 + dtype) * (kMaxHeadDim + 1) + static_cast<int>(hd)) * 2 + causal) * 2 +
           mod;
  }

  KernelTable() {
    index.fill(-1);
    std::set<int> dims;
    for (int i = 0; i < kNumKernels; ++i) {
      const KernelSpec& k = kKernels[i];
      if (k.head_dim > kMaxHeadDim) continue;
      index[slot(static_cast<int>(k.kind), static_cast<int>(k.dtype), k.head_dim, k.causal,
                 k.score_mod)] = static_cast<int16_t>(i);
      if (k.kind == KernelKind::kForward) dims.insert(k.head_dim);
    }
    for (int d : dims) head_dims += (head_dims.empty() ? "" : ", ") + std::to_string(d);
  }
};

const KernelTable& table() {
  static const KernelTable t;
  return t;
}

}  // namespace

int select_kernel(KernelKind kind, torch::headeronly::ScalarType dtype, int64_t head_dim,
                  bool causal, bool score_mod) {
  const KernelTable& t = table();
  const int dt = dtype == torch::headeronly::ScalarType::Half       ? 0
                 : dtype == torch::headeronly::ScalarType::BFloat16 ? 1
                                                                     : -1;
  int idx = -1;
  if (dt >= 0 && head_dim > 0 && head_dim <= kMaxHeadDim) {
    idx = t.index[KernelTable::slot(static_cast<int>(kind), dt, head_dim, causal, score_mod)];
  }
  SA_CHECK(idx >= 0, "sigmoid_attention: no CUDA kernel is compiled for head_dim=", head_dim,
           " (dtype ", torch::headeronly::toString(dtype), ", is_causal=", causal,
           ", score_mod=", score_mod, "); compiled head dims: ", t.head_dims,
           " in float16 and bfloat16");
  return idx;
}

}  // namespace sigmoid_attn
