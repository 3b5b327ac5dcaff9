// CUDA backward: two kernels on the current stream, each output element with one writer
// (bitwise deterministic, no atomics). dkdv: grid (key blocks, Hkv, B); dq: (query blocks, Hq, B).
// Packed (varlen) batches: grids over tiles of real tokens, (total // BLOCK + B + 1, H, 1).
// Where switched on (atomic_dq_dispatch) and compiled, one kernel instead: dkdv's grid, adding
// each key block's share of dQ into a zeroed fp32 buffer by TMA reductions, then a cast.
#include <torch/csrc/stable/ops.h>

#include "check.h"
#include "cuda_common.h"
#include "dispatch.h"
#include "kernel_spec.h"
#include "launch.h"
#include "ops.h"

namespace sigmoid_attn {

using torch::headeronly::ScalarType;

namespace {

// dq, dk, dv have q's, k's, v's shapes (dense [B, T, H, D] or packed [total, H, D]).
// dmod_heads: float32 per-kv-head partial sums, [B, Hkv, Tk] dense or [Hkv, total_k] packed.
void launch_backward(const ForwardProblem& p, const Tensor& grad_out, const Tensor& q,
                     const Tensor& k, const Tensor& v, const Tensor& dq, const Tensor& dk,
                     const Tensor& dv, const Tensor& dmod_heads,
                     const std::optional<Tensor>& lens_q, const std::optional<Tensor>& lens_k,
                     const std::optional<Tensor>& bias, const std::optional<Tensor>& score_mod,
                     bool is_causal) {
  const bool has_mod = score_mod.has_value();
  const auto dt = q.scalar_type();
  const int k_one = atomic_dq_dispatch()
                        ? find_kernel(KernelKind::kBackwardDkDvDq, dt, p.D, is_causal, has_mod,
                                      p.varlen, p.max_k)
                        : -1;
  const int k_dkdv = k_one >= 0 ? k_one
                                : select_kernel(KernelKind::kBackwardDkDv, dt, p.D, is_causal,
                                                has_mod, p.varlen, p.max_k);
  const int k_dq = select_kernel(KernelKind::kBackwardDq, dt, p.D, is_causal, has_mod, p.varlen,
                                 p.max_q);
  const Operand oq = operand(q, p.max_q), ok = operand(k, p.max_k), ov = operand(v, p.max_k),
                odo = operand(grad_out, p.max_q);
  const Operand odq = operand(dq, p.max_q), odk = operand(dk, p.max_k),
                odv = operand(dv, p.max_k);
  Extras e = extras(lens_q, lens_k, bias, score_mod, p.bias_mode, p.max_k);
  int32_t t_q = static_cast<int32_t>(p.Tq), t_k = static_cast<int32_t>(p.Tk),
          kv_group = static_cast<int32_t>(p.Hq / p.Hkv), num_seqs = static_cast<int32_t>(p.B),
          max_q = static_cast<int32_t>(p.max_q), max_k = static_cast<int32_t>(p.max_k);
  float a_scale = static_cast<float>(p.scale), a_bias_value = static_cast<float>(p.bias_value);
  int32_t has_lq = !p.varlen && e.lens_q.has_value(), has_lk = !p.varlen && e.lens_k.has_value(),
          bias_mode = p.bias_mode;
  CUdeviceptr a_q = oq.ptr, a_k = ok.ptr, a_v = ov.ptr, a_do = odo.ptr, a_dq = odq.ptr,
              a_dk = odk.ptr, a_dv = odv.ptr, a_dmod = has_mod ? dptr(dmod_heads) : 0;
  int64_t qb = oq.sb, qh = oq.sh, kb = ok.sb, kh = ok.sh, vb = ov.sb, vh = ov.sh, dob = odo.sb,
          doh = odo.sh, dqb = odq.sb, dqh = odq.sh, dkb = odk.sb, dkh = odk.sh, dvb = odv.sb,
          dvh = odv.sh;
  int32_t qt = oq.st, kt = ok.st, vt = ov.st, dot = odo.st, dqt = odq.st, dkt = odk.st,
          dvt = odv.st;
  int64_t dmb = 0, dmh = 0;
  if (has_mod) {
    dmb = p.varlen ? 0 : dmod_heads.stride(0);
    dmh = dmod_heads.stride(p.varlen ? 0 : 1);
  }
  const int device = q.get_device_index();
  const CUstream stream = current_stream(device);
  const unsigned grid_z = p.varlen ? 1u : static_cast<unsigned>(p.B);

  const KernelSpec& spec_kv = kKernels[k_dkdv];
  const unsigned grid_kv = p.varlen ? static_cast<unsigned>(p.Tk / spec_kv.block_n + p.B + 1)
                                    : cdiv(p.Tk, spec_kv.block_n);
  if (k_one >= 0) {  // variants.PARAMS["bwd_dkdv_dq"] order: dkdv's, the fp32 dQ after stride_smt
    Tensor dq_acc = p.varlen ? empty_cuda(q, {p.Tq, p.Hq, p.D}, ScalarType::Float)
                             : empty_cuda(q, {p.B, p.Tq, p.Hq, p.D}, ScalarType::Float);
    torch::stable::zero_(dq_acc);
    const Operand oacc = operand(dq_acc, p.max_q);
    CUdeviceptr a_acc = oacc.ptr;
    int64_t ab = oacc.sb, ah = oacc.sh;
    int32_t at = oacc.st;
    void* args[] = {&a_q,  &a_k,       &a_v,        &a_do,     &a_dk,  &a_dv, &a_dmod,
                    &e.p_lens_q, &e.p_lens_k, &e.p_bias, &e.p_mod,
                    &qb,   &qt,        &qh,         &kb,       &kt,    &kh,   &vb,
                    &vt,   &vh,        &dob,        &dot,      &doh,   &dkb,  &dkt,
                    &dkh,  &dvb,       &dvt,        &dvh,      &dmb,   &dmh,  &e.mod_sb,
                    &e.mod_st, &a_acc, &ab,         &at,       &ah,    &t_q,  &t_k,
                    &kv_group, &a_scale, &a_bias_value, &has_lq, &has_lk, &bias_mode,
                    &num_seqs, &max_q, &max_k};
    constexpr int kNumArgs = sizeof(args) / sizeof(args[0]);
    SA_CHECK(spec_kv.num_params == kNumArgs, "sigmoid_attn: kernel ", spec_kv.name, " has ",
             spec_kv.num_params, " parameters, the launcher packs ", kNumArgs);
    launch_kernel(k_dkdv, device, stream, grid_kv, static_cast<unsigned>(p.Hkv), grid_z, args);
    Tensor dq_out = dq;  // (a handle to the same storage)
    torch::stable::copy_(dq_out, dq_acc);  // fp32 -> dQ's dtype, on the current stream
    return;
  }
  {  // variants.PARAMS["bwd_dkdv"] order
    void* args[] = {&a_q,  &a_k,       &a_v,        &a_do,     &a_dk,  &a_dv, &a_dmod,
                    &e.p_lens_q, &e.p_lens_k, &e.p_bias, &e.p_mod,
                    &qb,   &qt,        &qh,         &kb,       &kt,    &kh,   &vb,
                    &vt,   &vh,        &dob,        &dot,      &doh,   &dkb,  &dkt,
                    &dkh,  &dvb,       &dvt,        &dvh,      &dmb,   &dmh,  &e.mod_sb,
                    &e.mod_st, &t_q,   &t_k,        &kv_group, &a_scale, &a_bias_value,
                    &has_lq, &has_lk,  &bias_mode,  &num_seqs, &max_q, &max_k};
    constexpr int kNumArgs = sizeof(args) / sizeof(args[0]);
    SA_CHECK(spec_kv.num_params == kNumArgs, "sigmoid_attn: kernel ", spec_kv.name, " has ",
             spec_kv.num_params, " parameters, the launcher packs ", kNumArgs);
    launch_kernel(k_dkdv, device, stream, grid_kv, static_cast<unsigned>(p.Hkv), grid_z, args);
  }
  {  // variants.PARAMS["bwd_dq"] order
    void* args[] = {&a_q,  &a_k,  &a_v,  &a_do, &a_dq, &e.p_lens_q, &e.p_lens_k, &e.p_bias,
                    &e.p_mod, &qb, &qt,  &qh,   &kb,   &kt,  &kh,  &vb,   &vt,   &vh,
                    &dob,  &dot,  &doh,  &dqb,  &dqt,  &dqh, &e.mod_sb, &e.mod_st,
                    &t_q,  &t_k,  &kv_group, &a_scale, &a_bias_value, &has_lq, &has_lk,
                    &bias_mode, &num_seqs, &max_q, &max_k};
    constexpr int kNumArgs = sizeof(args) / sizeof(args[0]);
    const KernelSpec& spec = kKernels[k_dq];
    SA_CHECK(spec.num_params == kNumArgs, "sigmoid_attn: kernel ", spec.name, " has ",
             spec.num_params, " parameters, the launcher packs ", kNumArgs);
    const unsigned grid_x = p.varlen ? static_cast<unsigned>(p.Tq / spec.block_m + p.B + 1)
                                     : cdiv(p.Tq, spec.block_m);
    launch_kernel(k_dq, device, stream, grid_x, static_cast<unsigned>(p.Hq), grid_z, args);
  }
}

// dscore_mod: the per-head partials summed over heads (deterministic), or an empty [0].
Tensor reduce_dmod(const Tensor& dmod_heads, const Tensor& q, bool has_mod, int head_dim) {
  return has_mod ? torch::stable::sum(dmod_heads, std::vector<int64_t>{head_dim})
                 : torch::stable::new_empty(q, {0}, ScalarType::Float);
}

}  // namespace

Grads backward_cuda(Tensor grad_out, SIGMOID_ATTN_FORWARD_ARGS) {
  const ForwardProblem p = check_backward(
      grad_out,
      {q, k, v, seq_lens_q, seq_lens_k, is_causal, scale, sigmoid_bias, sigmoid_bias_tensor,
       score_mod},
      Backend::kCUDA);
  const bool has_mod = score_mod.has_value();
  Tensor dq = empty_cuda(q, {p.B, p.Tq, p.Hq, p.D});
  Tensor dk = empty_cuda(k, {p.B, p.Tk, p.Hkv, p.D});
  Tensor dv = empty_cuda(v, {p.B, p.Tk, p.Hkv, p.D});
  Tensor dmod_heads = empty_cuda(q, {has_mod ? p.B : 0, p.Hkv, p.Tk}, ScalarType::Float);
  if (p.B == 0 || p.Hq == 0 || p.Tq == 0 || p.Tk == 0) {  // nothing attends: zero gradients
    for (Tensor* t : {&dq, &dk, &dv, &dmod_heads}) torch::stable::zero_(*t);
  } else {
    launch_backward(p, grad_out, q, k, v, dq, dk, dv, dmod_heads, seq_lens_q, seq_lens_k,
                    sigmoid_bias_tensor, score_mod, is_causal);
  }
  return Grads{dq, dk, dv, reduce_dmod(dmod_heads, q, has_mod, 1)};
}

Grads backward_varlen_cuda(Tensor grad_out, SIGMOID_ATTN_VARLEN_ARGS) {
  const ForwardProblem p = check_backward_varlen(
      grad_out,
      {q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, is_causal, scale,
       sigmoid_bias, sigmoid_bias_tensor, score_mod},
      Backend::kCUDA);
  const bool has_mod = score_mod.has_value();
  Tensor dq = empty_cuda(q, {p.Tq, p.Hq, p.D});
  Tensor dk = empty_cuda(k, {p.Tk, p.Hkv, p.D});
  Tensor dv = empty_cuda(v, {p.Tk, p.Hkv, p.D});
  Tensor dmod_heads = empty_cuda(q, {p.Hkv, has_mod ? p.Tk : 0}, ScalarType::Float);
  if (p.Hq == 0 || (p.Tq == 0 && p.Tk == 0)) {
    for (Tensor* t : {&dq, &dk, &dv, &dmod_heads}) torch::stable::zero_(*t);
  } else {
    // Every row of dq, dk, dv (tail rows past cu_seqlens[B] included) has one writer.
    launch_backward(p, grad_out, q, k, v, dq, dk, dv, dmod_heads, cu_seqlens_q, cu_seqlens_k,
                    sigmoid_bias_tensor, score_mod, is_causal);
  }
  return Grads{dq, dk, dv, reduce_dmod(dmod_heads, q, has_mod, 0)};
}

}  // namespace sigmoid_attn
