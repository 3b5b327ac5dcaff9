// Argument validation for every entry point, in one place. Each failure raises a RuntimeError
// whose message names the argument, the expected and the received value, e.g.
//   sigmoid_attention: seq_lens_k must be int32 of shape [B]=[4], got int64 [4]
#pragma once

#include <initializer_list>
#include <optional>

#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

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

// What the caller passed to forward_varlen: packed [total, H, D] tensors and cu_seqlens.
struct VarlenInputs {
  const Tensor& q;
  const Tensor& k;
  const Tensor& v;
  const Tensor& cu_seqlens_q;
  const Tensor& cu_seqlens_k;
  int64_t max_seqlen_q;
  int64_t max_seqlen_k;
  bool is_causal;
  std::optional<double> scale;
  std::optional<double> bias_value;
  const std::optional<Tensor>& bias;
  const std::optional<Tensor>& score_mod;
};

// The problem after validation, with defaults resolved. Packed (varlen) problems have B
// sequences, Tq / Tk packed tokens and max_q / max_k the longest sequence; dense ones have
// max_q = Tq, max_k = Tk.
struct ForwardProblem {
  int64_t B, Tq, Tk, Hq, Hkv, D;
  int64_t max_q, max_k;
  bool varlen;
  double scale;       // kept in double for the float64 CPU path; the kernels take float32
  int bias_mode;      // BiasMode (sigmoid_attn_constants.h, from variants.BIAS_MODES)
  double bias_value;
  torch::headeronly::ScalarType dtype;  // q's (and k's, v's)
};

// Throws on any invalid input; returns the normalized problem otherwise.
ForwardProblem check_forward(const ForwardInputs& in, Backend backend);

// check_forward plus grad_out: q's shape, dtype and device, contiguous last dim.
ForwardProblem check_backward(const Tensor& grad_out, const ForwardInputs& in, Backend backend);

// The same for forward_varlen / backward_varlen (grad_out: q's packed shape).
ForwardProblem check_forward_varlen(const VarlenInputs& in, Backend backend);
ForwardProblem check_backward_varlen(const Tensor& grad_out, const VarlenInputs& in,
                                     Backend backend);

// A caller's output buffer (the C/C++ API's *_out entry points): contiguous, of `shape`, q's
// dtype and device, 16-byte aligned, and sharing no memory with any input (other programs of
// the kernel still read them while it is written): q, k, v, the lengths (seq_lens or
// cu_seqlens), the bias tensor and score_mod.
void check_out(const Tensor& out, std::initializer_list<int64_t> shape, const Tensor& q,
               const Tensor& k, const Tensor& v, const std::optional<Tensor>& lens_q,
               const std::optional<Tensor>& lens_k, const std::optional<Tensor>& bias,
               const std::optional<Tensor>& score_mod);

// "[2, 16, 8, 64]"
std::string shape_str(const Tensor& t);
const char* dtype_str(const Tensor& t);

}  // namespace sigmoid_attn
