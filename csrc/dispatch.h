// Variant selection: (kind, dtype, head_dim, causal, score_mod, varlen, sequence length) ->
// index into kKernels. The length picks among tile buckets (KernelSpec::min_t) of one variant.
#pragma once

#include <cstdint>

#include <torch/headeronly/core/ScalarType.h>

#include "kernel_spec.h"

namespace sigmoid_attn {

// O(1) table lookup built once from the generated catalog. Throws, naming the supported
// set, when no compiled kernel matches.
int select_kernel(KernelKind kind, torch::headeronly::ScalarType dtype, int64_t head_dim,
                  bool causal, bool score_mod, bool varlen, int64_t seq_len);

// The small-problem (latency) tile of the same variant (KernelSpec::min_t == kSmallProblem),
// or -1 when none is compiled. The launcher takes it when select_kernel's tile would launch
// fewer programs than the GPU has SMs.
int select_small_kernel(int kernel);

}  // namespace sigmoid_attn
