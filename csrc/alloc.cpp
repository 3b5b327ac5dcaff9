#include "alloc.h"

#include <string>

#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/macros.h>
#include <torch/headeronly/util/shim_utils.h>

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
  if (aoti_torch_empty_strided(n, dims, strides, static_cast<int32_t>(dtype), device_type,
                               device_index, &h) != AOTI_TORCH_SUCCESS) {
    // torch's own message (from torch 2.13: the size asked, the memory free) leads; the
    // stable ABI's error path recovers it.
    std::string torch_message;
    try {
#ifdef TORCH_DYNAMIC_VERSION_CALL_2_13_0  // headers of torch >= 2.13: torch's message
      torch::stable::detail::throw_exception("aoti_torch_empty_strided", __FILE__, __LINE__);
#else  // older headers (a source build against torch 2.10-2.12): the call's name only
      torch::headeronly::detail::throw_exception("aoti_torch_empty_strided", __FILE__, __LINE__);
#endif
    } catch (const std::exception& e) {
      torch_message = e.what();
    }
    std::string shape;
    for (int64_t d = 0; d < n; ++d) shape += (d ? ", " : "") + std::to_string(dims[d]);
    SA_CHECK(false, "sigmoid_attn: allocating a ", torch::headeronly::toString(dtype),
             " tensor of shape [", shape, "] failed: ", torch_message);
  }
  return torch::stable::Tensor(h);
}

torch::stable::Tensor empty_cpu(const torch::stable::Tensor& like,
                                std::initializer_list<int64_t> sizes) {
  return empty_contiguous(aoti_torch_device_type_cpu(), 0, sizes, like.scalar_type());
}

}  // namespace sigmoid_attn
