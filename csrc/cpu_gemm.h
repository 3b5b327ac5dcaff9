// Matrix products and the sigmoid on raw CPU memory, through torch's own CPU kernels (its BLAS
// for mm, its vectorized sigmoid), called through the stable ABI's dispatcher. The tiled CPU
// attention (ops_cpu.cpp) builds on these: a tuned GEMM does the O(T^2 D) work, so our code only
// moves tiles and applies the elementwise steps between the products.
#pragma once

#include <cstdint>

#include <torch/headeronly/core/ScalarType.h>

namespace sigmoid_attn::cpu {

// A strided matrix over memory we own: element (r, c) at data[r * rs + c * cs].
struct Mat {
  void* data;
  int64_t rows, cols, rs, cs;
  Mat t() const { return Mat{data, cols, rows, cs, rs}; }
};

// A row-major block of `rows` x `cols` with leading dimension `ld`, starting at `p`.
template <typename A>
Mat rows_of(const A* p, int64_t rows, int64_t cols, int64_t ld) {
  return Mat{const_cast<A*>(p), rows, cols, ld, 1};
}

// out = a @ b; every operand float32 or float64 (dt). out is written, never read, and must not
// overlap a or b. Runs single-threaded when called inside a parallel region (torch's BLAS sees
// the enclosing region), which is how the attention loops use it.
void mm_out(const Mat& a, const Mat& b, const Mat& out, torch::headeronly::ScalarType dt);

// x = sigmoid(x) in place, elementwise over the matrix.
void sigmoid_(const Mat& x, torch::headeronly::ScalarType dt);

}  // namespace sigmoid_attn::cpu
