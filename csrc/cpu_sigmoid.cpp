#include "cpu_sigmoid.h"

#include <bit>

namespace sigmoid_attn::cpu {

namespace {

// exp(x) for x <= 0 as 2^n * e^r, |r| <= ln2 / 2, in plain arithmetic (no libm call, no
// branch), so that each clone below becomes straight vector code. n is rounded by adding and
// subtracting 1.5 * 2^23 (exact without -ffast-math, which the build does not use). Below -87
// (where 2^n would leave the normal floats) the result is exactly 0: a score_mod of -inf must
// give p = 0, so that a masked key's V and gradients never matter.
inline float exp_nonpositive(float x) {
  constexpr float kLo = -87.0f;
  const bool underflow = x < kLo;
  x = underflow ? kLo : x;  // NaN compares false and passes through
  constexpr float kRound = 12582912.0f;
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  // ln2 in two parts: n * kLn2Hi is exact for |n| < 2^11.
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float two_n = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  return underflow ? 0.0f : p * two_n;
}

// 1 / x for x in [1, 2] without a divide (the vector divide bounded this loop: ~40% of its
// time). Newton's iteration on x / 2 in [0.5, 1] from the linear minimax start 48/17 - 32/17 x
// (error <= 1/17); each step squares the error, so three reach float precision.
inline float reciprocal_1_2(float x) {
  const float h = 0.5f * x;
  float y = 2.82352941f - 1.88235294f * h;
  y = y + y * (1.0f - h * y);
  y = y + y * (1.0f - h * y);
  y = y + y * (1.0f - h * y);
  return 0.5f * y;
}

// sigmoid(s) = 1 / (1 + e^-s) for s >= 0, e^s / (1 + e^s) below: e^-|s| never overflows, and
// 1 + e^-|s| lies in [1, 2].
inline float sigmoid(float s) {
  const float e = exp_nonpositive(s < 0.0f ? s : -s);
  const float inv = reciprocal_1_2(1.0f + e);
  return s < 0.0f ? e * inv : inv;
}

}  // namespace

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
void scale_bias_sigmoid(float* p, int64_t m, int64_t n, const float* colbias, float scale) {
  for (int64_t r = 0; r < m; ++r) {
    float* row = p + r * n;
    for (int64_t c = 0; c < n; ++c) row[c] = sigmoid(row[c] * scale + colbias[c]);
  }
}

}  // namespace sigmoid_attn::cpu
