// Build facts exported by the ops library (plain C ABI, so the pybind11 module and C++ clients
// can read them without torch's headers).
#pragma once

#include <cstddef>

#define SIGMOID_ATTN_API __attribute__((visibility("default")))

extern "C" {
SIGMOID_ATTN_API const char* sigmoid_attn_version();
SIGMOID_ATTN_API const char* sigmoid_attn_torch_build_version();
SIGMOID_ATTN_API const char* sigmoid_attn_triton_build_version();
SIGMOID_ATTN_API int sigmoid_attn_cuda_header_version();
SIGMOID_ATTN_API int sigmoid_attn_compiled_arch();
SIGMOID_ATTN_API int sigmoid_attn_num_kernels();
// Field access for kernel i (0 <= i < num_kernels); nullptr / -1 when out of range.
SIGMOID_ATTN_API const char* sigmoid_attn_kernel_name(int i);
SIGMOID_ATTN_API int sigmoid_attn_kernel_field(int i, const char* field);
}
