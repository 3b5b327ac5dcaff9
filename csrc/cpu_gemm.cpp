#include "cpu_gemm.h"

#include <array>

#include <torch/csrc/stable/ops.h>
#include <torch/headeronly/util/shim_utils.h>

// Headers of torch 2.10-2.12 (a source build against them) predate the stable variant of the
// check, which recovers torch's own message.
#ifndef STABLE_TORCH_ERROR_CODE_CHECK
#define STABLE_TORCH_ERROR_CODE_CHECK TORCH_ERROR_CODE_CHECK
#endif

namespace sigmoid_attn::cpu {

namespace {

// A non-owning tensor over m: from_blob creates only the tensor's metadata, so wrapping a tile
// per product costs far less than the product itself (a 128x128x64 one takes ~20 us).
torch::stable::Tensor view(const Mat& m, torch::headeronly::ScalarType dt) {
  return torch::stable::from_blob(m.data, {m.rows, m.cols}, {m.rs, m.cs},
                                  torch::stable::Device(torch::headeronly::DeviceType::CPU), dt);
}

}  // namespace

void mm_out(const Mat& a, const Mat& b, const Mat& out, torch::headeronly::ScalarType dt) {
  using torch::stable::detail::from;
  std::array<StableIValue, 3> stack{from(view(a, dt)), from(view(b, dt)), from(view(out, dt))};
  STABLE_TORCH_ERROR_CODE_CHECK(
      torch_call_dispatcher("aten::mm", "out", stack.data(), TORCH_ABI_VERSION));
  (void)torch::stable::detail::to<torch::stable::Tensor>(stack[0]);  // releases the returned handle
}

void sigmoid_(const Mat& x, torch::headeronly::ScalarType dt) {
  using torch::stable::detail::from;
  std::array<StableIValue, 1> stack{from(view(x, dt))};
  STABLE_TORCH_ERROR_CODE_CHECK(
      torch_call_dispatcher("aten::sigmoid_", "", stack.data(), TORCH_ABI_VERSION));
  (void)torch::stable::detail::to<torch::stable::Tensor>(stack[0]);
}

}  // namespace sigmoid_attn::cpu
