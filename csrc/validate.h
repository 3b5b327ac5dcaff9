// Argument validation for every entry point, in one place. Each failure raises a RuntimeError
// whose message names the argument, the expected and the received value, e.g.
//   sigmoid_attention: seq_lens_k must be int32 of shape [B]=[4], got int64 [4]
#pragma once

#include <optional>

#include <torch/csrc/stable/tensor.h>

namespace sigmoid_attn {

using torch::stable::Tensor;

enum class Backend { kCPU, kCUDA, kMeta };

// What the caller passed to forward.
struct ForwardInputs {
  const Tensor& q;
  const Tensor& k;
  const Tensor& v;
  const std::optional<Tensor>& seq_lens_q;
  const std::optional<Tensor>& seq_lens_k;
  bool is_causal;
  std::optional<double> scale;
  std::optional<double> bias_value;
  const std::optional<Tensor>& bias;
  const std::optional<Tensor>& score_mod;
};

// The problem after validation, with defaults resolved.
struct ForwardProblem {
  int64_t B, Tq, Tk, Hq, Hkv, D;
  double scale;       // kept in double for the float64 CPU path; the kernels take float32
  int bias_mode;      // BiasMode (kernel_spec.h)
  double bias_value;
};

// Throws on any invalid input; returns the normalized problem otherwise.
ForwardProblem check_forward(const ForwardInputs& in, Backend backend);

// check_forward plus grad_out: q's shape, dtype and device, contiguous last dim.
ForwardProblem check_backward(const Tensor& grad_out, const ForwardInputs& in, Backend backend);

// "[2, 16, 8, 64]"
std::string shape_str(const Tensor& t);
const char* dtype_str(const Tensor& t);

}  // namespace sigmoid_attn
