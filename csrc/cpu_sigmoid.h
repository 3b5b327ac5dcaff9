// The score tile's elementwise step on the CPU: p = sigmoid(scale * p + colbias[col]), fused in
// one pass with an exp of our own that the compiler vectorizes, built for AVX-512, AVX2 and the
// x86-64 baseline and picked at load time by the CPU's features (the library runs on any
// x86-64). torch's sigmoid costs a second pass and, here, 10-15% of a forward at D=64.
#pragma once

#include <cstdint>

namespace sigmoid_attn::cpu {

// m rows of n contiguous floats. Relative error ~2e-7 (Cephes' expf polynomial); float64
// tiles take torch's sigmoid instead (they serve gradcheck).
void scale_bias_sigmoid(float* p, int64_t m, int64_t n, const float* colbias, float scale);

}  // namespace sigmoid_attn::cpu
