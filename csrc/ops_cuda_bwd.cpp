// CUDA backward: two kernels on the current stream, each output element with one writer
// (bitwise deterministic, no atomics). dkdv: grid (key blocks, Hkv, B); dq: (query blocks, Hq, B).
// Packed (varlen) batches: grids over tiles of real tokens, (total // BLOCK + B + 1, H, 1).
// Where switched on (atomic_dq_dispatch) and compiled, one kernel instead: dkdv's grid, adding
// each key block's share of dQ into a zeroed fp32 buffer by TMA reductions, then a cast.
#include <algorithm>

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
  // (both kernels read the same operands: the stricter stride promise of the two)
  const int sm = std::max(kKernels[k_dkdv].stride_multiple, kKernels[k_dq].stride_multiple);
  const Operand oq = operand(q, p.max_q, sm), ok = operand(k, p.max_k, sm),
                ov = operand(v, p.max_k, sm), odo = operand(grad_out, p.max_q, sm);
  const Operand odq = operand(dq, p.max_q, sm), odk = operand(dk, p.max_k, sm),
                odv = operand(dv, p.max_k, sm);
  Extras e = extras(lens_q, lens_k, bias, score_mod, p.bias_mode, p.max_k);
  const int32_t t_q = static_cast<int32_t>(p.Tq), t_k = static_cast<int32_t>(p.Tk),
                kv_group = static_cast<int32_t>(p.Hq / p.Hkv),
                num_seqs = static_cast<int32_t>(p.B), max_q = static_cast<int32_t>(p.max_q),
                max_k = static_cast<int32_t>(p.max_k);
  const float scale = static_cast<float>(p.scale), bias_value = static_cast<float>(p.bias_value);
  const int32_t has_lq = !p.varlen && e.lens_q.has_value(),
                has_lk = !p.varlen && e.lens_k.has_value();
  const CUdeviceptr dmod = has_mod ? dptr(dmod_heads) : 0;
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
  if (k_one >= 0) {  // dkdv's arguments, the fp32 dQ buffer after stride_smt
    Tensor dq_acc = p.varlen ? empty_cuda(q, {p.Tq, p.Hq, p.D}, ScalarType::Float)
                             : empty_cuda(q, {p.B, p.Tq, p.Hq, p.D}, ScalarType::Float);
    torch::stable::zero_(dq_acc);
    const Operand oacc = operand(dq_acc, p.max_q);
    BackwardDkDvDqArgs args{
        .Q = oq.ptr, .K = ok.ptr, .V = ov.ptr, .DO = odo.ptr, .DK = odk.ptr, .DV = odv.ptr,
        .DMOD = dmod, .SEQ_LENS_Q = e.p_lens_q, .SEQ_LENS_K = e.p_lens_k, .BIAS = e.p_bias,
        .SCORE_MOD = e.p_mod,
        .stride_qb = oq.sb, .stride_qt = oq.st, .stride_qh = oq.sh,
        .stride_kb = ok.sb, .stride_kt = ok.st, .stride_kh = ok.sh,
        .stride_vb = ov.sb, .stride_vt = ov.st, .stride_vh = ov.sh,
        .stride_dob = odo.sb, .stride_dot = odo.st, .stride_doh = odo.sh,
        .stride_dkb = odk.sb, .stride_dkt = odk.st, .stride_dkh = odk.sh,
        .stride_dvb = odv.sb, .stride_dvt = odv.st, .stride_dvh = odv.sh,
        .stride_dmb = dmb, .stride_dmh = dmh, .stride_smb = e.mod_sb, .stride_smt = e.mod_st,
        .DQ_ACC = oacc.ptr, .stride_dqab = oacc.sb, .stride_dqat = oacc.st,
        .stride_dqah = oacc.sh,
        .T_Q = t_q, .T_K = t_k, .kv_group = kv_group, .scale = scale, .bias_value = bias_value,
        .HAS_SEQ_LENS_Q = has_lq, .HAS_SEQ_LENS_K = has_lk, .BIAS_MODE = p.bias_mode,
        .num_seqs = num_seqs, .max_seqlen_q = max_q, .max_seqlen_k = max_k,
        .head_dim = static_cast<int32_t>(p.D)};
    launch(k_dkdv, device, stream, grid_kv, static_cast<unsigned>(p.Hkv), grid_z, args);
    Tensor dq_out = dq;  // (a handle to the same storage)
    torch::stable::copy_(dq_out, dq_acc);  // fp32 -> dQ's dtype, on the current stream
    return;
  }
  {
    BackwardDkDvArgs args{
        .Q = oq.ptr, .K = ok.ptr, .V = ov.ptr, .DO = odo.ptr, .DK = odk.ptr, .DV = odv.ptr,
        .DMOD = dmod, .SEQ_LENS_Q = e.p_lens_q, .SEQ_LENS_K = e.p_lens_k, .BIAS = e.p_bias,
        .SCORE_MOD = e.p_mod,
        .stride_qb = oq.sb, .stride_qt = oq.st, .stride_qh = oq.sh,
        .stride_kb = ok.sb, .stride_kt = ok.st, .stride_kh = ok.sh,
        .stride_vb = ov.sb, .stride_vt = ov.st, .stride_vh = ov.sh,
        .stride_dob = odo.sb, .stride_dot = odo.st, .stride_doh = odo.sh,
        .stride_dkb = odk.sb, .stride_dkt = odk.st, .stride_dkh = odk.sh,
        .stride_dvb = odv.sb, .stride_dvt = odv.st, .stride_dvh = odv.sh,
        .stride_dmb = dmb, .stride_dmh = dmh, .stride_smb = e.mod_sb, .stride_smt = e.mod_st,
        .T_Q = t_q, .T_K = t_k, .kv_group = kv_group, .scale = scale, .bias_value = bias_value,
        .HAS_SEQ_LENS_Q = has_lq, .HAS_SEQ_LENS_K = has_lk, .BIAS_MODE = p.bias_mode,
        .num_seqs = num_seqs, .max_seqlen_q = max_q, .max_seqlen_k = max_k,
        .head_dim = static_cast<int32_t>(p.D)};
    launch(k_dkdv, device, stream, grid_kv, static_cast<unsigned>(p.Hkv), grid_z, args);
  }
  {
    BackwardDqArgs args{
        .Q = oq.ptr, .K = ok.ptr, .V = ov.ptr, .DO = odo.ptr, .DQ = odq.ptr,
        .SEQ_LENS_Q = e.p_lens_q, .SEQ_LENS_K = e.p_lens_k, .BIAS = e.p_bias,
        .SCORE_MOD = e.p_mod,
        .stride_qb = oq.sb, .stride_qt = oq.st, .stride_qh = oq.sh,
        .stride_kb = ok.sb, .stride_kt = ok.st, .stride_kh = ok.sh,
        .stride_vb = ov.sb, .stride_vt = ov.st, .stride_vh = ov.sh,
        .stride_dob = odo.sb, .stride_dot = odo.st, .stride_doh = odo.sh,
        .stride_dqb = odq.sb, .stride_dqt = odq.st, .stride_dqh = odq.sh,
        .stride_smb = e.mod_sb, .stride_smt = e.mod_st,
        .T_Q = t_q, .T_K = t_k, .kv_group = kv_group, .scale = scale, .bias_value = bias_value,
        .HAS_SEQ_LENS_Q = has_lq, .HAS_SEQ_LENS_K = has_lk, .BIAS_MODE = p.bias_mode,
        .num_seqs = num_seqs, .max_seqlen_q = max_q, .max_seqlen_k = max_k,
        .head_dim = static_cast<int32_t>(p.D)};
    const KernelSpec& spec = kKernels[k_dq];
    const unsigned grid_x = p.varlen ? static_cast<unsigned>(p.Tq / spec.block_m + p.B + 1)
                                     : cdiv(p.Tq, spec.block_m);
    launch(k_dq, device, stream, grid_x, static_cast<unsigned>(p.Hq), grid_z, args);
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
