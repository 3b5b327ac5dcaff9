#include "alloc.h"

#include <torch/csrc/inductor/aoti_torch/c/shim.h>

#include "check.h"

namespace sigmoid_attn {

torch::stable::Tensor empty_contiguous(int32_t device_type, int32_t device_index,
                                       std::initializer_list<int64_t> sizes,
                                       torch::headeronly::ScalarType dtype) {
  int64_t dims[8], strides[8];
  const int64_t n = static_cast<int64_t>(sizes.size());
  SA_CHECK(n <= 8, "sigmoid_attn: at most 8 dims, got ", n);
  int64_t i = 0;
  for (int64_t s : sizes) dims[i++] = s;
  int64_t stride = 1;
  for (i = n - 1; i >= 0; --i) {
    strides[i] = stride;
    stride *= dims[i] > 0 ? dims[i] : 1;
  }
  AtenTensorHandle h = nullptr;
  // AOTI dtype codes are c10::ScalarType's values.
  SA_CHECK(aoti_torch_empty_strided(n, dims, strides, static_cast<int32_t>(dtype), device_type,
                                    device_index, &h) == AOTI_TORCH_SUCCESS,
           "sigmoid_attn: allocating an output tensor failed");
  return torch::stable::Tensor(h);
}

torch::stable::Tensor empty_cpu(const torch::stable::Tensor& like,
                                std::initializer_list<int64_t> sizes) {
  return empty_contiguous(aoti_torch_device_type_cpu(), 0, sizes, like.scalar_type());
}

}  // namespace sigmoid_attn
