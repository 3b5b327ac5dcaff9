#include "build_info.h"

#include <cuda.h>

#include <cstdint>
#include <cstring>
#include <exception>

#include "dispatch.h"
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
      {"runtime_head_dim", k.runtime_head_dim},
      {"stride_multiple", k.stride_multiple},
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

const char* sigmoid_attn_kernel_label(int i, const char* field) {
  if (i < 0 || i >= kNumKernels || field == nullptr) return nullptr;
  if (std::strcmp(field, "kind") == 0) {
    return sigmoid_attn::kKindNames[static_cast<int>(kKernels[i].kind)];
  }
  if (std::strcmp(field, "dtype") == 0) {
    return sigmoid_attn::kDTypeNames[static_cast<int>(kKernels[i].dtype)];
  }
  return nullptr;
}

// The dispatcher's forward choice for a problem (dtype: a DType code, variants.DTYPES), as an
// index into the catalog, or -1 where nothing is compiled: lets the tests check the size rules
// (length buckets, the small-problem tile) without a GPU.
int sigmoid_attn_select_forward_kernel(int dtype, int64_t head_dim, int causal, int score_mod,
                                       int varlen, int64_t max_q, int64_t Tq, int64_t B,
                                       int64_t Hq, int sm_count, int warp_specialized,
                                       int gluon_forward) {
  if (dtype < 0 || dtype >= sigmoid_attn::kNumDTypes) return -1;
  try {
    const auto type = sigmoid_attn::scalar_type(static_cast<sigmoid_attn::DType>(dtype));
    return sigmoid_attn::select_forward(type, head_dim, causal, score_mod, varlen, max_q, Tq, B,
                                        Hq, sm_count, warp_specialized != 0, gluon_forward != 0);
  } catch (const std::exception& e) {
    sigmoid_attn::set_last_error(e.what());
    return -1;
  }
}

// The dispatcher's backward choice for a problem (select_backward), as a catalog index, or -1.
int sigmoid_attn_select_backward_kernel(int dtype, int64_t head_dim, int causal, int score_mod,
                                        int varlen, int64_t max_k, int gluon_backward) {
  if (dtype < 0 || dtype >= sigmoid_attn::kNumDTypes) return -1;
  try {
    const auto type = sigmoid_attn::scalar_type(static_cast<sigmoid_attn::DType>(dtype));
    return sigmoid_attn::select_backward(type, head_dim, causal, score_mod, varlen, max_k,
                                         gluon_backward != 0);
  } catch (const std::exception& e) {
    sigmoid_attn::set_last_error(e.what());
    return -1;
  }
}

// Whether CUDA calls take the warp-specialized forward where one is compiled (default:
// tiles.json's fwd_ws_dispatch; docs/performance.md); set < 0 only reads. Returns the setting
// before the call.
int sigmoid_attn_warp_specialized(int set) {
  if (set < 0) return sigmoid_attn::warp_specialized_dispatch();
  return sigmoid_attn::set_warp_specialized_dispatch(set != 0);
}

int sigmoid_attn_gluon_forward(int set) {
  if (set < 0) return sigmoid_attn::gluon_forward_dispatch();
  return sigmoid_attn::set_gluon_forward_dispatch(set != 0);
}

int sigmoid_attn_gluon_backward(int set) {
  if (set < 0) return sigmoid_attn::gluon_backward_dispatch();
  return sigmoid_attn::set_gluon_backward_dispatch(set != 0);
}

int sigmoid_attn_tile_queue(int set) {
  if (set < 0) return sigmoid_attn::tile_queue_dispatch() ? 1 : 0;
  return sigmoid_attn::set_tile_queue_dispatch(set != 0) ? 1 : 0;
}

int sigmoid_attn_split_wave(int set) {
  if (set < 0) return sigmoid_attn::split_wave_dispatch();
  return sigmoid_attn::set_split_wave_dispatch(set);
}

}  // extern "C"
