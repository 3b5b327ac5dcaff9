// The C entry points of include/sigmoid_attn/c_api.h: the same forward functions the dispatcher
// calls (ops_cuda.cpp / ops_cpu.cpp), reached without boxing. Exceptions never cross the C
// boundary: each becomes a nonzero return and a per-thread message.
#include "sigmoid_attn/c_api.h"

#include <exception>
#include <optional>
#include <string>
#include <utility>

#include "build_info.h"
#include "check.h"
#include "ops.h"

namespace sigmoid_attn {
namespace {

thread_local std::string g_last_error;

// A new reference to a caller's tensor (the stable Tensor releases it when it goes away).
Tensor borrow(AtenTensorHandle h, const char* name) {
  SA_CHECK(h != nullptr, "sigmoid_attention: ", name, " must be a tensor, got a null handle");
  AtenTensorHandle mine = nullptr;
  SA_CHECK(aoti_torch_new_tensor_handle(h, &mine) == AOTI_TORCH_SUCCESS,
           "sigmoid_attention: cannot reference ", name);
  return Tensor(mine);
}

std::optional<Tensor> borrow_optional(AtenTensorHandle h, const char* name) {
  if (h == nullptr) return std::nullopt;
  return borrow(h, name);
}

std::optional<double> value(const double* x) {
  return x != nullptr ? std::optional<double>(*x) : std::nullopt;
}

bool on_cuda(AtenTensorHandle q) {
  int32_t type = 0;
  SA_CHECK(aoti_torch_get_device_type(q, &type) == AOTI_TORCH_SUCCESS,
           "sigmoid_attention: cannot read q's device");
  if (type == aoti_torch_device_type_cuda()) return true;
  SA_CHECK(type == aoti_torch_device_type_cpu(),
           "sigmoid_attention: the C API serves CPU and CUDA tensors, got q on device type ",
           type);
  return false;
}

// Hands `t` to the caller as a new handle.
void give(const Tensor& t, AtenTensorHandle* out) {
  SA_CHECK(aoti_torch_new_tensor_handle(t.get(), out) == AOTI_TORCH_SUCCESS,
           "sigmoid_attention: cannot return the output");
}

// Runs body(); an exception becomes a nonzero return and this thread's last error.
template <typename F>
int32_t guarded_void(F&& body) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    g_last_error = e.what();
  } catch (...) {
    g_last_error = "sigmoid_attention: unknown error";
  }
  return 1;
}

// For the allocating entry points: body() returns the output, handed over as *out.
template <typename F>
int32_t guarded(AtenTensorHandle* out, F&& body) {
  return guarded_void([&] {
    SA_CHECK(out != nullptr, "sigmoid_attention: out must point to a handle, got null");
    *out = nullptr;
    give(body(), out);
  });
}

}  // namespace

void set_last_error(const char* message) { g_last_error = message; }

}  // namespace sigmoid_attn

using sigmoid_attn::borrow;
using sigmoid_attn::borrow_optional;
using sigmoid_attn::value;

extern "C" {

int32_t sigmoid_attn_c_api_version(void) { return SIGMOID_ATTN_C_API_VERSION; }

const char* sigmoid_attn_last_error(void) { return sigmoid_attn::g_last_error.c_str(); }

int32_t sigmoid_attn_forward(AtenTensorHandle q, AtenTensorHandle k, AtenTensorHandle v,
                             AtenTensorHandle seq_lens_q, AtenTensorHandle seq_lens_k,
                             int32_t is_causal, const double* scale, const double* sigmoid_bias,
                             AtenTensorHandle sigmoid_bias_tensor, AtenTensorHandle score_mod,
                             AtenTensorHandle* out) {
  return sigmoid_attn::guarded(out, [&] {
    sigmoid_attn::Tensor tq = borrow(q, "q");
    auto f = sigmoid_attn::on_cuda(q) ? &sigmoid_attn::forward_cuda : &sigmoid_attn::forward_cpu;
    return f(std::move(tq), borrow(k, "k"), borrow(v, "v"),
             borrow_optional(seq_lens_q, "seq_lens_q"), borrow_optional(seq_lens_k, "seq_lens_k"),
             is_causal != 0, value(scale), value(sigmoid_bias),
             borrow_optional(sigmoid_bias_tensor, "sigmoid_bias_tensor"),
             borrow_optional(score_mod, "score_mod"));
  });
}

int32_t sigmoid_attn_forward_varlen(AtenTensorHandle q, AtenTensorHandle k, AtenTensorHandle v,
                                    AtenTensorHandle cu_seqlens_q, AtenTensorHandle cu_seqlens_k,
                                    int64_t max_seqlen_q, int64_t max_seqlen_k, int32_t is_causal,
                                    const double* scale, const double* sigmoid_bias,
                                    AtenTensorHandle sigmoid_bias_tensor,
                                    AtenTensorHandle score_mod, AtenTensorHandle* out) {
  return sigmoid_attn::guarded(out, [&] {
    sigmoid_attn::Tensor tq = borrow(q, "q");
    auto f = sigmoid_attn::on_cuda(q) ? &sigmoid_attn::forward_varlen_cuda
                                      : &sigmoid_attn::forward_varlen_cpu;
    return f(std::move(tq), borrow(k, "k"), borrow(v, "v"), borrow(cu_seqlens_q, "cu_seqlens_q"),
             borrow(cu_seqlens_k, "cu_seqlens_k"), max_seqlen_q, max_seqlen_k, is_causal != 0,
             value(scale), value(sigmoid_bias),
             borrow_optional(sigmoid_bias_tensor, "sigmoid_bias_tensor"),
             borrow_optional(score_mod, "score_mod"));
  });
}

int32_t sigmoid_attn_forward_out(AtenTensorHandle q, AtenTensorHandle k, AtenTensorHandle v,
                                 AtenTensorHandle seq_lens_q, AtenTensorHandle seq_lens_k,
                                 int32_t is_causal, const double* scale,
                                 const double* sigmoid_bias, AtenTensorHandle sigmoid_bias_tensor,
                                 AtenTensorHandle score_mod, AtenTensorHandle out) {
  return sigmoid_attn::guarded_void([&] {
    sigmoid_attn::Tensor tq = borrow(q, "q");
    auto f = sigmoid_attn::on_cuda(q) ? &sigmoid_attn::forward_cuda_out
                                      : &sigmoid_attn::forward_cpu_out;
    f(std::move(tq), borrow(k, "k"), borrow(v, "v"), borrow_optional(seq_lens_q, "seq_lens_q"),
      borrow_optional(seq_lens_k, "seq_lens_k"), is_causal != 0, value(scale),
      value(sigmoid_bias), borrow_optional(sigmoid_bias_tensor, "sigmoid_bias_tensor"),
      borrow_optional(score_mod, "score_mod"), borrow(out, "out"));
  });
}

int32_t sigmoid_attn_forward_varlen_out(AtenTensorHandle q, AtenTensorHandle k,
                                        AtenTensorHandle v, AtenTensorHandle cu_seqlens_q,
                                        AtenTensorHandle cu_seqlens_k, int64_t max_seqlen_q,
                                        int64_t max_seqlen_k, int32_t is_causal,
                                        const double* scale, const double* sigmoid_bias,
                                        AtenTensorHandle sigmoid_bias_tensor,
                                        AtenTensorHandle score_mod, AtenTensorHandle out) {
  return sigmoid_attn::guarded_void([&] {
    sigmoid_attn::Tensor tq = borrow(q, "q");
    auto f = sigmoid_attn::on_cuda(q) ? &sigmoid_attn::forward_varlen_cuda_out
                                      : &sigmoid_attn::forward_varlen_cpu_out;
    f(std::move(tq), borrow(k, "k"), borrow(v, "v"), borrow(cu_seqlens_q, "cu_seqlens_q"),
      borrow(cu_seqlens_k, "cu_seqlens_k"), max_seqlen_q, max_seqlen_k, is_causal != 0,
      value(scale), value(sigmoid_bias),
      borrow_optional(sigmoid_bias_tensor, "sigmoid_bias_tensor"),
      borrow_optional(score_mod, "score_mod"), borrow(out, "out"));
  });
}

}  // extern "C"
