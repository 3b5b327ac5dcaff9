#include "build_info.h"

#include <cuda.h>

#include <cstring>

#include "kernel_spec.h"

#ifndef SIGMOID_ATTN_VERSION
#error "SIGMOID_ATTN_VERSION must be defined by the build"
#endif
#ifndef SIGMOID_ATTN_TORCH_VERSION
#error "SIGMOID_ATTN_TORCH_VERSION must be defined by the build"
#endif

using sigmoid_attn::kKernels;
using sigmoid_attn::kNumKernels;

extern "C" {

const char* sigmoid_attn_version() { return SIGMOID_ATTN_VERSION; }
const char* sigmoid_attn_torch_build_version() { return SIGMOID_ATTN_TORCH_VERSION; }
const char* sigmoid_attn_triton_build_version() { return sigmoid_attn::kTritonVersion; }
int sigmoid_attn_cuda_header_version() { return CUDA_VERSION; }
int sigmoid_attn_compiled_arch() { return sigmoid_attn::kCompiledArch; }
int sigmoid_attn_num_kernels() { return kNumKernels; }

const char* sigmoid_attn_kernel_name(int i) {
  return (i >= 0 && i < kNumKernels) ? kKernels[i].name : nullptr;
}

int sigmoid_attn_kernel_field(int i, const char* field) {
  if (i < 0 || i >= kNumKernels || field == nullptr) return -1;
  const auto& k = kKernels[i];
  struct {
    const char* name;
    int value;
  } const fields[] = {
      {"kind", static_cast<int>(k.kind)},
      {"dtype", static_cast<int>(k.dtype)},
      {"head_dim", k.head_dim},
      {"causal", k.causal},
      {"score_mod", k.score_mod},
      {"varlen", k.varlen},
      {"block_m", k.block_m},
      {"block_n", k.block_n},
      {"num_warps", k.num_warps},
      {"num_stages", k.num_stages},
      {"min_t", k.min_t},
      {"shared_bytes", k.shared_bytes},
      {"num_hidden_params", k.num_hidden_params},
      {"cubin_bytes", static_cast<int>(k.image_size)},
  };
  for (const auto& f : fields) {
    if (std::strcmp(f.name, field) == 0) return f.value;
  }
  return -1;
}

}  // extern "C"
