// CUDA backward on the current stream, one of two paths:
// - the Gluon backward (on by default, gluon_backward_dispatch; the [B, T, H, D] calls it
//   covers, with or without lengths, causal ones with as many keys as queries): a memset of an
//   fp32 dQ buffer, the kernel (grid: key blocks of 128, Hkv, B; dK, dV written directly, dQ
//   added by TMA reductions), then the dq_cast kernel into dQ; not taken when the caller asks
//   for determinism (torch's deterministic mode, passed by the Python autograd);
// - otherwise two kernels, each output element with one writer (bitwise deterministic, no
//   atomics). dkdv: grid (key blocks, Hkv, B); dq: (query blocks, Hq, B). Packed (varlen)
//   batches: grids over tiles of real tokens, (total // BLOCK + B + 1, H, 1).
#include <algorithm>
#include <cmath>
#include <optional>

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

// The Gluon backward's operands as TMA sees them ([B, T, H, D]), when each can be seen so.
struct GluonOperands {
  TmaRows q, k, v, grad_out, dk, dv;
};

// Whether a call is one the Gluon backward covers beyond its variant flags (select_backward
// checks those and that it and its cast are compiled): switched on; the caller allows a
// nondeterministic dQ (fp32 reduce-adds in arrival order); a [B, T, H, D] batch, with lengths
// for both queries and keys (kind kBackwardGluonPadded, which derives the default bias
// -log(Lk) per sequence) or with none, or a packed one (the same kind compiled for packed
// rows); any bias (default, scalar, one per sequence, read by the kernel); at least one
// query and one key (its pipeline waits for tiles that would never come); dQ's element count
// within the cast's int32 index and a multiple of 16 (its 16-byte loads); q, k, v, grad_out,
// dk, dv readable as [B, T, H, D] by TMA.
// Anything else takes the two-kernel backward.
std::optional<GluonOperands> gluon_operands(const ForwardProblem& p, const Tensor& grad_out,
                                            const Tensor& q, const Tensor& k, const Tensor& v,
                                            const Tensor& dk, const Tensor& dv, bool has_lens_q,
                                            bool has_lens_k, bool deterministic) {
  // (row coordinates and lengths are int32 in the kernel: a tile's last row included)
  constexpr int64_t kMaxRows = INT32_MAX - 512;
  const int64_t dq_elems = (p.varlen ? 1 : p.B) * p.Tq * p.Hq * p.D;
  if (!gluon_backward_dispatch() || deterministic || has_lens_q != has_lens_k || p.Tq < 1 ||
      p.Tk < 1 || p.Tq > kMaxRows || p.Tk > kMaxRows || dq_elems >= (int64_t(1) << 31) ||
      dq_elems % 16 != 0 ||
      (p.varlen && p.max_k < 1)) {
    return std::nullopt;
  }
  constexpr int kElemBytes = 2;  // fp16 / bf16: the only dtypes it is compiled for
  if (p.dtype != ScalarType::Half && p.dtype != ScalarType::BFloat16) return std::nullopt;
  auto rq = tma_rows(q, kElemBytes), rk = tma_rows(k, kElemBytes), rv = tma_rows(v, kElemBytes),
       rdo = tma_rows(grad_out, kElemBytes), rdk = tma_rows(dk, kElemBytes),
       rdv = tma_rows(dv, kElemBytes);
  if (!rq || !rk || !rv || !rdo || !rdk || !rdv) return std::nullopt;
  // (a packed call's masked stores place head h at h * D of a row, one row stride for dK and
  // dV: they are allocated so)
  if (p.varlen && (rdk->sh != uint64_t(p.D) || rdv->sh != uint64_t(p.D) || rdk->st != rdv->st)) {
    return std::nullopt;
  }
  return GluonOperands{*rq, *rk, *rv, *rdo, *rdk, *rdv};
}

// Where the backward kernels write score_mod's gradient: per-KV-head partial sums along keys,
// dmod_heads [B, Hkv, Tk] (sb, sh its batch and head strides) or [Hkv, total_k] packed (sb 0);
// null where the call has no score_mod.
struct DmodOut {
  CUdeviceptr ptr = 0;
  int64_t sb = 0, sh = 0;
};

// The argument struct of either Gluon backward kind (the same fields: one kernel source).
// e: the call's lengths, bias tensor and score_mod as the kernels read them (extras()).
// dk_ptr, dv_ptr, dk_stride: a packed call's dK, dV and their row stride (elements) for the
// masked stores where a sequence ends inside a warpgroup's keys and the tail's zeros; 0 otherwise
// (not read). MAX_Q/MAX_K: a packed call's max_seqlen (longer sequences are cut to it).
template <typename Args>
Args gluon_args(const TensorMapArg* maps, const ForwardProblem& p, const Extras& e,
                const DmodOut& dmod, double bias, CUdeviceptr dk_ptr = 0,
                CUdeviceptr dv_ptr = 0, int32_t dk_stride = 0) {
  return Args{.q_desc = maps[0], .k_desc = maps[1], .v_desc = maps[2], .do_desc = maps[3],
              .dq_desc = maps[4], .dk_desc = maps[5], .dv_desc = maps[6],
              .SEQ_LENS_Q = e.p_lens_q, .SEQ_LENS_K = e.p_lens_k,
              .T_Q = static_cast<int32_t>(p.Tq), .T_K = static_cast<int32_t>(p.Tk),
              .kv_group = static_cast<int32_t>(p.Hq / p.Hkv),
              .scale = static_cast<float>(p.scale), .bias_value = static_cast<float>(bias),
              .DK = dk_ptr, .DV = dv_ptr, .stride_kt = dk_stride,
              .D = static_cast<int32_t>(p.D), .BIAS = e.p_bias, .SCORE_MOD = e.p_mod,
              .stride_smb = e.mod_sb, .DMOD = dmod.ptr, .stride_dmb = dmod.sb,
              .stride_dmh = dmod.sh, .BIAS_MODE = static_cast<int32_t>(p.bias_mode),
              .MAX_Q = static_cast<int32_t>(p.max_q), .MAX_K = static_cast<int32_t>(p.max_k)};
}

// Zeroes a fresh fp32 dQ buffer, runs the Gluon backward into it (dK, dV directly) and casts it
// into dq; false (nothing launched) when the driver refuses a descriptor. e: int32 lengths on
// the device for kBackwardGluonPadded (kBackwardGluon never reads them), the bias tensor and
// score_mod; dmod: where a score_mod variant writes its gradient's per-head partials. One
// allocation (the buffer, from torch's caching allocator: capturable), no synchronization.
bool launch_gluon(int kernel, const ForwardProblem& p, const GluonOperands& ops, const Tensor& q,
                  const Tensor& dq, const Extras& e, const DmodOut& dmod) {
  const KernelSpec& spec = kKernels[kernel];
  // (the cast compiled beside the kernel's power of two: elementwise, it serves any D)
  const int cast = find_kernel(KernelKind::kDqCast, p.dtype, block_d(spec), false, false, false,
                               p.max_k);
  if (cast < 0) return false;
  Tensor dq_acc = p.varlen ? empty_cuda(q, {p.Tq, p.Hq, p.D}, ScalarType::Float)
                           : empty_cuda(q, {p.B, p.Tq, p.Hq, p.D}, ScalarType::Float);
  const auto racc = tma_rows(dq_acc, 4);
  if (!racc) return false;
  // The descriptors in the kernel's order (variants.PARAMS["bwd_gluon"]).
  const TmaRows* rows[] = {&ops.q, &ops.k, &ops.v, &ops.grad_out, &*racc, &ops.dk, &ops.dv};
  constexpr int kMaps = sizeof(rows) / sizeof(rows[0]);
  SA_CHECK(spec.num_tensor_maps == kMaps, "sigmoid_attn: kernel ", spec.name, " has ",
           spec.num_tensor_maps, " descriptors, the launcher encodes ", kMaps);
  TensorMapArg maps[kMaps];
  const int device = q.get_device_index();
  const DeviceContext ctx(device);  // (the driver encodes descriptors only in a context)
  for (int i = 0; i < kMaps; ++i) {
    if (!tensor_map_arg(&maps[i], spec.tensor_maps[i], *rows[i])) return false;
  }
  // Without lengths the default bias, -log(valid key count), is -log(Tk); with them the kernel
  // derives it per sequence and ignores bias_value.
  const double bias = p.bias_mode == kBiasScalar ? p.bias_value
                                                 : -std::log(static_cast<double>(p.Tk));
  const CUstream stream = current_stream(device);
  const int64_t n = (p.varlen ? 1 : p.B) * p.Tq * p.Hq * p.D;
  // Every launch below is on the same stream: the kernel's reduce-adds see the zeroed buffer,
  // and the cast sees every reduce-add (the kernel's TMA stores complete before it exits).
  memset_d32(device, stream, dptr(dq_acc), 0u, static_cast<size_t>(n));
  // Packed: a CTA per key block of max_seqlen_k per sequence (the blocks past a sequence's
  // length exit at once), and z = B the tail past cu_seqlens_k[B], whose dK, dV rows it zeroes.
  const unsigned gx = cdiv(p.varlen ? p.max_k : p.Tk, spec.block_n),
                 gy = static_cast<unsigned>(p.Hkv),
                 gz = static_cast<unsigned>(p.varlen ? p.B + 1 : p.B);
  if (spec.kind == KernelKind::kBackwardGluonPadded) {
    auto args = p.varlen ? gluon_args<BackwardGluonPaddedArgs>(
                               maps, p, e, dmod, bias, ops.dk.ptr, ops.dv.ptr,
                               static_cast<int32_t>(ops.dk.st))
                         : gluon_args<BackwardGluonPaddedArgs>(maps, p, e, dmod, bias);
    launch(kernel, device, stream, gx, gy, gz, args);
  } else {
    auto args = gluon_args<BackwardGluonArgs>(maps, p, e, dmod, bias);
    launch(kernel, device, stream, gx, gy, gz, args);
  }
  DqCastArgs cast_args{.src = dptr(dq_acc), .dst = dptr(dq),
                       .n = static_cast<int32_t>(n)};
  launch(cast, device, stream, cdiv(n, kKernels[cast].block_m), 1, 1, cast_args);
  return true;  // dq_acc goes back to the caching allocator, which orders its reuse by stream
}

// dq, dk, dv have q's, k's, v's shapes (dense [B, T, H, D] or packed [total, H, D]).
// dmod_heads: float32 per-kv-head partial sums, [B, Hkv, Tk] dense or [Hkv, total_k] packed.
void launch_backward(const ForwardProblem& p, const Tensor& grad_out, const Tensor& q,
                     const Tensor& k, const Tensor& v, const Tensor& dq, const Tensor& dk,
                     const Tensor& dv, const Tensor& dmod_heads,
                     const std::optional<Tensor>& lens_q, const std::optional<Tensor>& lens_k,
                     const std::optional<Tensor>& bias, const std::optional<Tensor>& score_mod,
                     bool is_causal, bool deterministic) {
  const bool has_mod = score_mod.has_value();
  const auto dt = q.scalar_type();
  // (causal: its mask is the top-left diagonal of a square problem)
  const bool padded = lens_q.has_value() && lens_k.has_value();
  // int32 lengths, a float32 bias tensor and score_mod (converted on the device when given
  // otherwise), alive past the launches.
  Extras e = extras(lens_q, lens_k, bias, score_mod, p.bias_mode, p.max_k);
  // The Gluon backward takes score_mod on dense calls without lengths (its own variant, which
  // writes dmod_heads' rows itself), rows contiguous along keys.
  const bool gluon_mod = !has_mod || (!p.varlen && !lens_q.has_value() && !lens_k.has_value() &&
                                      e.mod_st == 1);
  DmodOut dmod;
  if (has_mod) {
    dmod = DmodOut{dptr(dmod_heads), p.varlen ? 0 : dmod_heads.stride(0),
                   dmod_heads.stride(p.varlen ? 0 : 1)};
  }
  const std::optional<GluonOperands> g =
      !gluon_mod || (is_causal && !p.varlen && p.Tq != p.Tk)
          ? std::nullopt
          : gluon_operands(p, grad_out, q, k, v, dk, dv, lens_q.has_value(), lens_k.has_value(),
                           deterministic);
  int k_dkdv = select_backward(dt, p.D, is_causal, has_mod, p.varlen, p.max_k, g.has_value(),
                               padded);
  const KernelKind kind = kKernels[k_dkdv].kind;
  if (kind == KernelKind::kBackwardGluon || kind == KernelKind::kBackwardGluonPadded) {
    if (launch_gluon(k_dkdv, p, *g, q, dq, e, dmod)) return;
    k_dkdv = select_backward(dt, p.D, is_causal, has_mod, p.varlen, p.max_k, false);
  }
  const int k_dq = select_kernel(KernelKind::kBackwardDq, dt, p.D, is_causal, has_mod, p.varlen,
                                 p.max_q);
  // (both kernels read the same operands: the stricter stride promise of the two)
  const int sm = std::max(kKernels[k_dkdv].stride_multiple, kKernels[k_dq].stride_multiple);
  const Operand oq = operand(q, p.max_q, sm), ok = operand(k, p.max_k, sm),
                ov = operand(v, p.max_k, sm), odo = operand(grad_out, p.max_q, sm);
  const Operand odq = operand(dq, p.max_q, sm), odk = operand(dk, p.max_k, sm),
                odv = operand(dv, p.max_k, sm);
  const int32_t t_q = static_cast<int32_t>(p.Tq), t_k = static_cast<int32_t>(p.Tk),
                kv_group = static_cast<int32_t>(p.Hq / p.Hkv),
                num_seqs = static_cast<int32_t>(p.B), max_q = static_cast<int32_t>(p.max_q),
                max_k = static_cast<int32_t>(p.max_k);
  const float scale = static_cast<float>(p.scale), bias_value = static_cast<float>(p.bias_value);
  const int32_t has_lq = !p.varlen && e.lens_q.has_value(),
                has_lk = !p.varlen && e.lens_k.has_value();
  const int device = q.get_device_index();
  const CUstream stream = current_stream(device);
  const unsigned grid_z = p.varlen ? 1u : static_cast<unsigned>(p.B);

  const KernelSpec& spec_kv = kKernels[k_dkdv];
  const unsigned grid_kv = p.varlen ? static_cast<unsigned>(p.Tk / spec_kv.block_n + p.B + 1)
                                    : cdiv(p.Tk, spec_kv.block_n);
  {
    BackwardDkDvArgs args{
        .Q = oq.ptr, .K = ok.ptr, .V = ov.ptr, .DO = odo.ptr, .DK = odk.ptr, .DV = odv.ptr,
        .DMOD = dmod.ptr, .SEQ_LENS_Q = e.p_lens_q, .SEQ_LENS_K = e.p_lens_k, .BIAS = e.p_bias,
        .SCORE_MOD = e.p_mod,
        .stride_qb = oq.sb, .stride_qt = oq.st, .stride_qh = oq.sh,
        .stride_kb = ok.sb, .stride_kt = ok.st, .stride_kh = ok.sh,
        .stride_vb = ov.sb, .stride_vt = ov.st, .stride_vh = ov.sh,
        .stride_dob = odo.sb, .stride_dot = odo.st, .stride_doh = odo.sh,
        .stride_dkb = odk.sb, .stride_dkt = odk.st, .stride_dkh = odk.sh,
        .stride_dvb = odv.sb, .stride_dvt = odv.st, .stride_dvh = odv.sh,
        .stride_dmb = dmod.sb, .stride_dmh = dmod.sh, .stride_smb = e.mod_sb,
        .stride_smt = e.mod_st,
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

Grads backward_cuda(Tensor grad_out, SIGMOID_ATTN_FORWARD_ARGS, bool deterministic) {
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
                    sigmoid_bias_tensor, score_mod, is_causal, deterministic);
  }
  return Grads{dq, dk, dv, reduce_dmod(dmod_heads, q, has_mod, 1)};
}

Grads backward_varlen_cuda(Tensor grad_out, SIGMOID_ATTN_VARLEN_ARGS, bool deterministic) {
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
                    sigmoid_bias_tensor, score_mod, is_causal, deterministic);
  }
  return Grads{dq, dk, dv, reduce_dmod(dmod_heads, q, has_mod, 0)};
}

}  // namespace sigmoid_attn
