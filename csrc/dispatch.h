// Variant selection: (kind, dtype, head_dim, causal, score_mod) -> index into kKernels.
#pragma once

#include <cstdint>

#include <torch/headeronly/core/ScalarType.h>

#include "kernel_spec.h"

namespace sigmoid_attn {

// O(1) table lookup built once from the generated catalog. Throws, naming the supported
// set, when no compiled kernel matches.
int select_kernel(KernelKind kind, torch::headeronly::ScalarType dtype, int64_t head_dim,
                  bool causal, bool score_mod);

}  // namespace sigmoid_attn
