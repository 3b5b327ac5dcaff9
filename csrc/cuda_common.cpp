#include "cuda_common.h"

#include <dlfcn.h>

#include <climits>
#include <cstdint>
#include <utility>

#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/ops.h>

#include "check.h"
#include "cuda_driver.h"
#include "kernel_spec.h"

namespace sigmoid_attn {

using torch::headeronly::ScalarType;

namespace {

int64_t stride_or_zero(const Tensor& t, int d) { return t.size(d) == 1 ? 0 : t.stride(d); }

// Lengths and the bias tensor are [B]: already dense in the usual call, and then returned as is
// (torch::stable::contiguous would be a boxed dispatcher call on every launch).
Tensor as_dense(const Tensor& t, ScalarType dt) {
  if (t.scalar_type() == dt && (t.size(0) <= 1 || t.stride(0) == 1)) return t;
  return torch::stable::contiguous(t.scalar_type() == dt ? t : torch::stable::to(t, dt));
}

using GetStreamFn = AOTITorchError (*)(int32_t, void**);

// aoti_torch_get_current_cuda_stream lives in libtorch_cuda; resolved at first use so that the
// library also loads with a CPU-only torch.
GetStreamFn get_stream_fn() {
  static const GetStreamFn fn = [] {
    void* h = dlopen("libtorch_cuda.so", RTLD_NOW | RTLD_NOLOAD);
    void* sym = h ? dlsym(h, "aoti_torch_get_current_cuda_stream") : nullptr;
    if (sym == nullptr) sym = dlsym(RTLD_DEFAULT, "aoti_torch_get_current_cuda_stream");
    SA_CHECK(sym != nullptr, "sigmoid_attn: this torch has no CUDA support "
             "(aoti_torch_get_current_cuda_stream not found)");
    return reinterpret_cast<GetStreamFn>(sym);
  }();
  return fn;
}

}  // namespace

namespace {

// Dims, sizes, strides and the base pointer in four shim calls (sizes and strides are read in
// place), not one call per query: operand() runs four to seven times per launch.
struct Layout {
  int64_t n = 0;
  int64_t* sizes = nullptr;
  int64_t* strides = nullptr;
  void* data = nullptr;

  explicit Layout(const Tensor& t) {
    AtenTensorHandle h = t.get();
    SA_CHECK(aoti_torch_get_dim(h, &n) == AOTI_TORCH_SUCCESS &&
                 aoti_torch_get_sizes(h, &sizes) == AOTI_TORCH_SUCCESS &&
                 aoti_torch_get_strides(h, &strides) == AOTI_TORCH_SUCCESS &&
                 aoti_torch_get_data_ptr(h, &data) == AOTI_TORCH_SUCCESS && (n == 3 || n == 4),
             "sigmoid_attn: cannot read an operand's layout");
  }
  int64_t stride(int d) const { return sizes[d] == 1 ? 0 : strides[d]; }
  bool packed() const { return n == 3; }
  int row_dim() const { return packed() ? 0 : 1; }
  // Every dim but the last (contiguous) one: batch, row, head, or row, head when packed.
  bool aligned(int stride_multiple) const {
    bool ok = reinterpret_cast<uintptr_t>(data) % 16 == 0;
    for (int d = 0; d + 1 < n; ++d) ok = ok && stride(d) % stride_multiple == 0;
    return ok;
  }
  // The kernels' one 32-bit product (sigmoid_attn_fwd.py, "Addressing"): a row offset inside
  // one sequence, up to the longest sequence plus one tile (at most 256 rows).
  bool rows_fit_int32(int64_t max_rows) const {
    const int64_t st = stride(row_dim());
    return st <= INT32_MAX / 512 * 256 && (max_rows + 256) * st < INT32_MAX;
  }
};

}  // namespace

Operand operand(const Tensor& t, int64_t max_rows, int stride_multiple) {
  Layout l(t);
  if (max_rows < 0) max_rows = l.sizes[l.row_dim()];
  std::optional<Tensor> keep;
  // Rare: a misaligned view, or one whose row stride would overflow the kernels' 32-bit row
  // offsets, is copied once into a contiguous buffer.
  if (!l.aligned(stride_multiple) || !l.rows_fit_int32(max_rows)) {
    const int64_t* s = l.sizes;
    keep = l.packed() ? torch::stable::new_empty(t, {s[0], s[1], s[2]})
                      : torch::stable::new_empty(t, {s[0], s[1], s[2], s[3]});
    torch::stable::copy_(*keep, t);
    l = Layout(*keep);
  }
  const int64_t st = l.stride(l.row_dim());
  SA_CHECK(l.rows_fit_int32(max_rows),
           "sigmoid_attention: one sequence of a tensor may span at most 2^31 elements, got ",
           max_rows, " rows of ", st, " elements");
  return Operand{std::move(keep), reinterpret_cast<CUdeviceptr>(l.data),
                 l.packed() ? 0 : l.stride(0), static_cast<int32_t>(st),
                 l.stride(l.packed() ? 1 : 2)};
}

std::optional<TmaRows> tma_rows(const Tensor& t, int elem_bytes) {
  Layout l(t);
  // A packed [total, H, D] tensor is seen as one batch entry of total rows.
  const int o = l.packed() ? 1 : 0;  // (dims of [B, T, H, D] the tensor lacks)
  const int64_t B = l.packed() ? 1 : l.sizes[0], T = l.sizes[1 - o], H = l.sizes[2 - o],
                D = l.sizes[3 - o];
  if (B <= 0 || T <= 0 || H <= 0 || D <= 0) return std::nullopt;
  if (D > 1 && l.strides[3 - o] != 1) return std::nullopt;
  // Any head stride TMA can step by: heads packed along a row (D), or SDPA's [B, H, T, D]
  // seen as [B, T, H, D] (T*D), or the heads of a fused projection.
  const int64_t sh = H > 1 ? l.strides[2 - o] : D;
  const int64_t st = T > 1 ? l.strides[1 - o] : H * D;
  const int64_t sb = B > 1 ? l.strides[0] : T * st;
  constexpr int64_t kMaxStrideBytes = int64_t(1) << 40;
  constexpr int64_t kMaxExtent = (int64_t(1) << 32) - 1;
  const auto stride_ok = [&](int64_t s) {
    return s > 0 && s < kMaxStrideBytes / elem_bytes && (s * elem_bytes) % 16 == 0;
  };
  if (reinterpret_cast<uintptr_t>(l.data) % 16 != 0 || !stride_ok(sh) || !stride_ok(st) ||
      !stride_ok(sb) || B > kMaxExtent || T > kMaxExtent || H > kMaxExtent || D > kMaxExtent) {
    return std::nullopt;
  }
  return TmaRows{reinterpret_cast<CUdeviceptr>(l.data), uint64_t(B), uint64_t(T), uint64_t(H),
                 uint64_t(D), uint64_t(sb), uint64_t(st), uint64_t(sh)};
}

bool encode_tensor_map(CUtensorMap* map, const TensorMapSpec& spec, const TmaRows& rows) {
  const CudaDriver& cu = cuda_driver();
  if (cu.cuTensorMapEncodeTiled == nullptr) return false;
  static_assert(kTensorMapRank == 4, "the [B, T, H, D] view is rank 4");
  // The driver takes dims innermost first, and the strides of all but the innermost in bytes.
  const cuuint64_t dims[4] = {rows.D, rows.H, rows.T, rows.B};
  const cuuint64_t strides[3] = {rows.sh * spec.elem_bytes, rows.st * spec.elem_bytes,
                                 rows.sb * spec.elem_bytes};
  const cuuint32_t box[4] = {spec.box[3], spec.box[2], spec.box[1], spec.box[0]};
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  // OOB_FILL_NONE reads zeros past each sequence's T (what the kernel's unmasked tail relies
  // on) and past D (a kernel compiled for more columns than the tensor has computes them as
  // zeros; its stores and reductions drop them); L2 promotion as Triton's own launcher encodes
  // its descriptors.
  return cu.cuTensorMapEncodeTiled(
             map, static_cast<CUtensorMapDataType>(spec.data_type), 4,
             reinterpret_cast<void*>(rows.ptr), dims, strides, box, element_strides,
             CU_TENSOR_MAP_INTERLEAVE_NONE, static_cast<CUtensorMapSwizzle>(spec.swizzle),
             CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) ==
         CUDA_SUCCESS;
}

bool tensor_map_arg(TensorMapArg* a, const TensorMapSpec& m, const TmaRows& rows) {
  if (!encode_tensor_map(&a->map, m, rows)) return false;
  const uint32_t shape[] = {uint32_t(rows.B), uint32_t(rows.T), uint32_t(rows.H),
                            uint32_t(rows.D)};
  const uint64_t stride[] = {rows.sb, rows.st, rows.sh, 1};
  for (int d = 0; d < kTensorMapRank; ++d) {
    a->shape[d] = shape[d];
    a->stride[d] = stride[d];
  }
  return true;
}

Extras extras(const std::optional<Tensor>& seq_lens_q, const std::optional<Tensor>& seq_lens_k,
              const std::optional<Tensor>& bias, const std::optional<Tensor>& score_mod,
              int bias_mode, int64_t max_k) {
  Extras e;
  if (seq_lens_q.has_value()) e.lens_q = as_dense(*seq_lens_q, ScalarType::Int);
  if (seq_lens_k.has_value()) e.lens_k = as_dense(*seq_lens_k, ScalarType::Int);
  if (bias_mode == kBiasTensor) e.bias = as_dense(*bias, ScalarType::Float);
  if (score_mod.has_value()) {
    e.mod = score_mod->scalar_type() == ScalarType::Float
                ? *score_mod
                : torch::stable::to(*score_mod, ScalarType::Float);
    const bool packed = e.mod->dim() == 1;  // [total_k] (varlen) or [B, Tk]
    // Key offsets inside one sequence are 32-bit in the kernels: a view whose key stride would
    // overflow them over the longest sequence is made contiguous (it is [B, Tk] floats).
    const auto fits = [&](const Tensor& m) {
      const int64_t st = stride_or_zero(m, packed ? 0 : 1);
      return st <= INT32_MAX / 512 * 256 && (max_k + 256) * st < INT32_MAX;
    };
    if (!fits(*e.mod)) e.mod = torch::stable::contiguous(*e.mod);
    SA_CHECK(fits(*e.mod), "sigmoid_attention: one sequence of score_mod may span at most 2^31 "
             "elements, got ", max_k, " keys");
    e.mod_sb = packed ? 0 : stride_or_zero(*e.mod, 0);
    e.mod_st = static_cast<int32_t>(stride_or_zero(*e.mod, packed ? 0 : 1));
  }
  e.p_lens_q = e.lens_q ? dptr(*e.lens_q) : 0;
  e.p_lens_k = e.lens_k ? dptr(*e.lens_k) : 0;
  e.p_bias = e.bias ? dptr(*e.bias) : 0;
  e.p_mod = e.mod ? dptr(*e.mod) : 0;
  return e;
}

Tensor empty_cuda(const Tensor& like, std::initializer_list<int64_t> sizes, ScalarType dtype) {
  return empty_contiguous(aoti_torch_device_type_cuda(), like.get_device_index(), sizes, dtype);
}

CUstream current_stream(int device) {
  void* s = nullptr;
  SA_CHECK(get_stream_fn()(device, &s) == AOTI_TORCH_SUCCESS,
           "sigmoid_attn: cannot read the current CUDA stream of cuda:", device);
  return static_cast<CUstream>(s);
}

}  // namespace sigmoid_attn
