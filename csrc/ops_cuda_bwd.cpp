// CUDA backward: two kernels on the current stream, each output element with one writer
// (bitwise deterministic, no atomics). dkdv: grid (key blocks, Hkv, B); dq: (query blocks, Hq, B).
#include <torch/csrc/stable/ops.h>

#include "check.h"
#include "cuda_common.h"
#include "dispatch.h"
#include "kernel_spec.h"
#include "launch.h"
#include "ops.h"

namespace sigmoid_attn {

using torch::headeronly::ScalarType;

Grads backward_cuda(Tensor grad_out, SIGMOID_ATTN_FORWARD_ARGS) {
  const ForwardProblem p = check_backward(
      grad_out,
      {q, k, v, seq_lens_q, seq_lens_k, is_causal, scale, sigmoid_bias, sigmoid_bias_tensor,
       score_mod},
      Backend::kCUDA);
  const bool has_mod = score_mod.has_value();
  const auto dt = q.scalar_type();
  const int k_dkdv = select_kernel(KernelKind::kBackwardDkDv, dt, p.D, is_causal, has_mod, p.Tk);
  const int k_dq = select_kernel(KernelKind::kBackwardDq, dt, p.D, is_causal, has_mod, p.Tq);

  Tensor dq = empty_cuda(q, {p.B, p.Tq, p.Hq, p.D});
  Tensor dk = empty_cuda(k, {p.B, p.Tk, p.Hkv, p.D});
  Tensor dv = empty_cuda(v, {p.B, p.Tk, p.Hkv, p.D});
  // Per-kv-head partial sums of dS over rows; summed over heads below (deterministic).
  Tensor dmod_heads = empty_cuda(q, {has_mod ? p.B : 0, p.Hkv, p.Tk}, ScalarType::Float);
  auto finish = [&]() {
    Tensor dmod = has_mod ? torch::stable::sum(dmod_heads, std::vector<int64_t>{1})
                          : torch::stable::new_empty(q, {0}, ScalarType::Float);
    return Grads{dq, dk, dv, dmod};
  };
  if (p.B == 0 || p.Hq == 0 || p.Tq == 0 || p.Tk == 0) {  // nothing attends: zero gradients
    torch::stable::zero_(dq);
    torch::stable::zero_(dk);
    torch::stable::zero_(dv);
    if (has_mod) torch::stable::zero_(dmod_heads);
    return finish();
  }

  const Operand oq = operand(q), ok = operand(k), ov = operand(v), odo = operand(grad_out);
  const Operand odq = operand(dq), odk = operand(dk), odv = operand(dv);
  Extras e = extras(seq_lens_q, seq_lens_k, sigmoid_bias_tensor, score_mod, p.bias_mode);
  int32_t t_q = static_cast<int32_t>(p.Tq), t_k = static_cast<int32_t>(p.Tk),
          kv_group = static_cast<int32_t>(p.Hq / p.Hkv);
  float a_scale = static_cast<float>(p.scale), a_bias_value = static_cast<float>(p.bias_value);
  int32_t has_lq = e.lens_q.has_value(), has_lk = e.lens_k.has_value(), bias_mode = p.bias_mode;
  CUdeviceptr a_q = oq.ptr, a_k = ok.ptr, a_v = ov.ptr, a_do = odo.ptr, a_dq = odq.ptr,
              a_dk = odk.ptr, a_dv = odv.ptr, a_dmod = has_mod ? dptr(dmod_heads) : 0;
  int64_t qb = oq.sb, qh = oq.sh, kb = ok.sb, kh = ok.sh, vb = ov.sb, vh = ov.sh, dob = odo.sb,
          doh = odo.sh, dqb = odq.sb, dqh = odq.sh, dkb = odk.sb, dkh = odk.sh, dvb = odv.sb,
          dvh = odv.sh;
  int32_t qt = oq.st, kt = ok.st, vt = ov.st, dot = odo.st, dqt = odq.st, dkt = odk.st,
          dvt = odv.st;
  int64_t dmb = has_mod ? dmod_heads.stride(0) : 0, dmh = has_mod ? dmod_heads.stride(1) : 0;
  const int device = q.get_device_index();
  const CUstream stream = current_stream(device);

  {  // variants.PARAMS["bwd_dkdv"] order
    void* args[] = {&a_q,  &a_k,       &a_v,        &a_do,     &a_dk,  &a_dv, &a_dmod,
                    &e.p_lens_q, &e.p_lens_k, &e.p_bias, &e.p_mod,
                    &qb,   &qt,        &qh,         &kb,       &kt,    &kh,   &vb,
                    &vt,   &vh,        &dob,        &dot,      &doh,   &dkb,  &dkt,
                    &dkh,  &dvb,       &dvt,        &dvh,      &dmb,   &dmh,  &e.mod_sb,
                    &e.mod_st, &t_q,   &t_k,        &kv_group, &a_scale, &a_bias_value,
                    &has_lq, &has_lk,  &bias_mode};
    constexpr int kNumArgs = sizeof(args) / sizeof(args[0]);
    const KernelSpec& spec = kKernels[k_dkdv];
    SA_CHECK(spec.num_params == kNumArgs, "sigmoid_attn: kernel ", spec.name, " has ",
             spec.num_params, " parameters, the launcher packs ", kNumArgs);
    launch_kernel(k_dkdv, device, stream, cdiv(p.Tk, spec.block_n),
                  static_cast<unsigned>(p.Hkv), static_cast<unsigned>(p.B), args);
  }
  {  // variants.PARAMS["bwd_dq"] order
    void* args[] = {&a_q,  &a_k,  &a_v,  &a_do, &a_dq, &e.p_lens_q, &e.p_lens_k, &e.p_bias,
                    &e.p_mod, &qb, &qt,  &qh,   &kb,   &kt,  &kh,  &vb,   &vt,   &vh,
                    &dob,  &dot,  &doh,  &dqb,  &dqt,  &dqh, &e.mod_sb, &e.mod_st,
                    &t_q,  &t_k,  &kv_group, &a_scale, &a_bias_value, &has_lq, &has_lk,
                    &bias_mode};
    constexpr int kNumArgs = sizeof(args) / sizeof(args[0]);
    const KernelSpec& spec = kKernels[k_dq];
    SA_CHECK(spec.num_params == kNumArgs, "sigmoid_attn: kernel ", spec.name, " has ",
             spec.num_params, " parameters, the launcher packs ", kNumArgs);
    launch_kernel(k_dq, device, stream, cdiv(p.Tq, spec.block_m), static_cast<unsigned>(p.Hq),
                  static_cast<unsigned>(p.B), args);
  }
  return finish();
}

}  // namespace sigmoid_attn
