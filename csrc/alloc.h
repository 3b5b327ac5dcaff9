// Output allocation for the op implementations: one C shim call (aoti_torch_empty_strided), not
// the boxed dispatcher path that torch::stable::new_empty takes (microseconds of a tiny call).
#pragma once

#include <initializer_list>

#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

namespace sigmoid_attn {

// A new contiguous tensor of `sizes` and `dtype` on a device (AOTI device type codes:
// aoti_torch_device_type_cpu() / _cuda()).
torch::stable::Tensor empty_contiguous(int32_t device_type, int32_t device_index,
                                       std::initializer_list<int64_t> sizes,
                                       torch::headeronly::ScalarType dtype);

// The same on the CPU, `like`'s dtype.
torch::stable::Tensor empty_cpu(const torch::stable::Tensor& like,
                                std::initializer_list<int64_t> sizes);

}  // namespace sigmoid_attn
