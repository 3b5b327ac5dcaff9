// Argument preparation shared by the CUDA forward and backward launchers.
#pragma once

#include <cuda.h>

#include <initializer_list>
#include <optional>

#include <torch/csrc/stable/tensor.h>

#include "alloc.h"
#include "kernel_args.h"
#include "kernel_spec.h"
#include "validate.h"

namespace sigmoid_attn {

// A [B, T, H, D] (or packed [total, H, D], batch stride 0) operand as the kernels see it: base
// pointer and (batch, row, head) strides.
struct Operand {
  std::optional<Tensor> keep;  // owns the copy when the input had to be realigned
  CUdeviceptr ptr;
  int64_t sb;
  int32_t st;
  int64_t sh;
};

// Kernels are compiled assuming 16-byte aligned bases and strides that are multiples of
// `stride_multiple` elements (KernelSpec::stride_multiple: 16, or 8 for head dims that are not
// multiples of 16, so that their contiguous tensors qualify; Triton then issues 16-byte vector
// loads). Dims of size 1 never move the pointer, so their stride is passed as 0. Anything else is
// copied once into a contiguous buffer. max_rows: the longest sequence the kernel walks
// (default: the tensor's T).
Operand operand(const Tensor& t, int64_t max_rows = -1, int stride_multiple = 16);

// A [B, T, H, D] operand as the rank-4 tensor a TMA descriptor describes (the Gluon kernels'
// view; a packed [total, H, D] one as [1, total, H, D]): base pointer, extents and strides in
// elements, size-1 dims given the strides of a dense layout (their stride is never used, but the
// descriptor needs a valid one).
struct TmaRows {
  CUdeviceptr ptr;
  uint64_t B, T, H, D;
  uint64_t sb, st, sh;
};

// The view, when TMA can read t through it: a contiguous last dim, a 16-byte aligned base,
// positive head, row and batch strides that are multiples of 16 bytes below 2^40 bytes
// (cuTensorMapEncodeTiled's rules; any order: SDPA's [B, H, T, D] seen as [B, T, H, D]
// qualifies), and extents below 2^32. std::nullopt otherwise (the call then takes another
// kernel).
std::optional<TmaRows> tma_rows(const Tensor& t, int elem_bytes);

// Encodes the descriptor `spec` of a kernel (box, swizzle, element type: from the compiled
// metadata) over `rows`, with zero fill outside the tensor. Host only: no device work, no
// allocation. False when the driver has no TMA support or refuses the layout.
bool encode_tensor_map(CUtensorMap* map, const TensorMapSpec& spec, const TmaRows& rows);

// One descriptor argument of a Gluon kernel: the CUtensorMap encoded on the host and the
// [B, T, H, D] shape and [sb, st, sh, 1] strides (elements) the kernel takes after it; false when
// the driver refuses it.
bool tensor_map_arg(TensorMapArg* a, const TensorMapSpec& spec, const TmaRows& rows);

// Lengths (int32), bias tensor and score_mod (float32), dense as the kernels index them.
struct Extras {
  std::optional<Tensor> lens_q, lens_k, bias, mod;
  CUdeviceptr p_lens_q = 0, p_lens_k = 0, p_bias = 0, p_mod = 0;
  int64_t mod_sb = 0;
  int32_t mod_st = 0;
};
Extras extras(const std::optional<Tensor>& seq_lens_q, const std::optional<Tensor>& seq_lens_k,
              const std::optional<Tensor>& bias, const std::optional<Tensor>& score_mod,
              int bias_mode, int64_t max_k);

CUstream current_stream(int device);

// A new contiguous CUDA tensor on `like`'s device (alloc.h).
Tensor empty_cuda(const Tensor& like, std::initializer_list<int64_t> sizes,
                  torch::headeronly::ScalarType dtype);
inline Tensor empty_cuda(const Tensor& like, std::initializer_list<int64_t> sizes) {
  return empty_cuda(like, sizes, like.scalar_type());
}

inline CUdeviceptr dptr(const Tensor& t) { return reinterpret_cast<CUdeviceptr>(t.data_ptr()); }

inline unsigned cdiv(int64_t a, int b) { return static_cast<unsigned>((a + b - 1) / b); }

}  // namespace sigmoid_attn
