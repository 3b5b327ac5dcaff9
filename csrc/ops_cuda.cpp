// CUDA forward: validate -> pick the compiled variant -> pack arguments -> launch on the
// current stream. No host synchronization: lengths (or cu_seqlens) stay on the device, so the
// call is CUDA-graph capturable.
#include <algorithm>
#include <climits>
#include <cmath>

#include <torch/csrc/stable/ops.h>

#include "check.h"
#include "cuda_common.h"
#include "dispatch.h"
#include "kernel_spec.h"
#include "launch.h"
#include "ops.h"

namespace sigmoid_attn {

namespace {

// The Gluon forward's operands as TMA sees them, when every one of them can be seen so.
struct GluonOperands {
  TmaRows q, k, v, o;
};

// Whether a call is one the Gluon forward covers beyond its variant flags (select_forward
// checks those, the compiled head dims and the grid size): a [B, T, H, D] batch with lengths
// either for both queries and keys (kind kForwardGluonPadded, which derives the default bias
// -log(Lk) per sequence) or for neither, or a packed batch (kind kForwardGluonPadded compiled
// for packed rows: cu_seqlens read in the kernel); any bias (default, scalar, or a tensor of
// one bias per sequence, read by the kernel); at least one key (with none its pipeline would
// wait for a first key block that never comes); a dense causal call only with as many keys as
// queries (its causal schedule and masks are per batch entry; packed causal calls align each
// sequence top-left, as the other forwards); q, k, v, out readable by TMA ([B, T, H, D], or
// [1, total, H, D] packed). Anything else takes the other forwards.
std::optional<GluonOperands> gluon_operands(const ForwardProblem& p, const Tensor& q,
                                            const Tensor& k, const Tensor& v, const Tensor& out,
                                            bool has_lens_q, bool has_lens_k, bool is_causal) {
  // (its row coordinates and lengths are int32: a tile's last row, up to 256 past T, included)
  constexpr int64_t kMaxRows = INT32_MAX - 512;
  // With per-sequence lengths, a packed batch's tiles, and a non-causal padded one's (its
  // length-aware order), find their sequences with a cursor each program carries forward over
  // the lengths: O(B) per program. Measured from 4 to 128 packed sequences (ahead of the Triton
  // forward at each: 1.19-1.57x); beyond kMaxWalkedSequences the Triton forwards take the call
  // (their packed programs count their sequence 256 entries per vector load).
  constexpr int64_t kMaxWalkedSequences = 1024;
  const bool walks = p.varlen || (has_lens_q && !is_causal);
  if (walks && p.B > kMaxWalkedSequences) return std::nullopt;
  if (has_lens_q != has_lens_k || p.Tk < 1 || (is_causal && !p.varlen && p.Tq != p.Tk) ||
      p.Tq > kMaxRows || p.Tk > kMaxRows || !gluon_forward_dispatch()) {
    return std::nullopt;
  }
  constexpr int kElemBytes = 2;  // fp16 / bf16: the only dtypes it is compiled for
  if (p.dtype != torch::headeronly::ScalarType::Half &&
      p.dtype != torch::headeronly::ScalarType::BFloat16) {
    return std::nullopt;
  }
  auto rq = tma_rows(q, kElemBytes), rk = tma_rows(k, kElemBytes), rv = tma_rows(v, kElemBytes),
       ro = tma_rows(out, kElemBytes);
  if (!rq || !rk || !rv || !ro) return std::nullopt;
  // (a packed call's masked stores place head h at h * D of a row: out is allocated so)
  if (p.varlen && ro->sh != uint64_t(p.D)) return std::nullopt;
  return GluonOperands{*rq, *rk, *rv, *ro};
}

// The argument struct of either Gluon forward kind (the same fields: one kernel source).
// e: the call's lengths, bias tensor and score_mod as the kernels read them (extras()).
// o_ptr, o_stride: the output and its row stride (elements) for a packed call's masked stores;
// 0 otherwise (not read). MAX_Q/MAX_K: a packed call's max_seqlen (longer sequences are cut to
// it, as in the Triton kernels).
// The walk over the tiles (the kernel's SCHEDULE): 0 static; 1 static with the last wave split
// (_join_piece / _add_pieces): ws, float32 [programs, BLOCK_M, HEAD_DIM], one slot per program
// for the partial it does not finish, flags int32 [(tiles mod programs) * consumer warpgroups];
// 2 the queue: flags int32 [1], the count of tiles taken. Flags are zeroed before the launch.
struct Schedule {
  CUdeviceptr ws = 0, flags = 0;
  int32_t mode = 0;
};

template <typename Args>
Args gluon_args(const TensorMapArg* maps, const ForwardProblem& p, const Extras& e, double bias,
                const Schedule& schedule, CUdeviceptr o_ptr = 0, int32_t o_stride = 0) {
  return Args{.q_desc = maps[0], .k_desc = maps[1], .v_desc = maps[2], .o_desc = maps[3],
              .SEQ_LENS_Q = e.p_lens_q, .SEQ_LENS_K = e.p_lens_k, .O = o_ptr,
              .stride_ot = o_stride, .D = static_cast<int32_t>(p.D), .BIAS = e.p_bias,
              .SCORE_MOD = e.p_mod, .stride_smb = e.mod_sb,
              .BIAS_MODE = static_cast<int32_t>(p.bias_mode),
              .T_Q = static_cast<int32_t>(p.Tq), .T_K = static_cast<int32_t>(p.Tk),
              .H = static_cast<int32_t>(p.Hq), .B = static_cast<int32_t>(p.B),
              .kv_group = static_cast<int32_t>(p.Hq / p.Hkv),
              .scale = static_cast<float>(p.scale), .bias_value = static_cast<float>(bias),
              .MAX_Q = static_cast<int32_t>(p.max_q), .MAX_K = static_cast<int32_t>(p.max_k),
              .WS = schedule.ws, .FLAGS = schedule.flags, .SCHEDULE = schedule.mode};
}

// Whether a Gluon forward variant splits its last wave: the kernel's SPLIT (dense, not causal,
// two consumer warpgroups of 64 rows, at most 128 columns), mirrored here from its tile.
bool splits_last_wave(const KernelSpec& spec) {
  return spec.kind == KernelKind::kForwardGluon && !spec.causal && spec.block_m == 128 &&
         spec.head_dim <= 128;
}

// Encodes the kernel's four descriptors on the host and launches it; false (nothing launched)
// when the driver refuses a descriptor. e: int32 lengths on the device for kForwardGluonPadded
// (kForwardGluon is compiled without lengths: never read), the bias tensor, score_mod. No
// synchronization: the arguments live on this stack frame, and cuLaunchKernel copies them; a
// call whose tiles end in a partial wave over the SMs, on a variant that splits it, takes two
// buffers from torch's caching allocator (capturable) and zeroes the flags on the stream.
bool launch_gluon(int kernel, const ForwardProblem& p, const GluonOperands& ops, int device,
                  const Extras& e, const Tensor& like) {
  const KernelSpec& spec = kKernels[kernel];
  const TmaRows* rows[] = {&ops.q, &ops.k, &ops.v, &ops.o};  // the descriptors, in order
  constexpr int kMaps = sizeof(rows) / sizeof(rows[0]);
  SA_CHECK(spec.num_tensor_maps == kMaps, "sigmoid_attn: kernel ", spec.name, " has ",
           spec.num_tensor_maps, " descriptors, the launcher encodes ", kMaps);
  TensorMapArg maps[kMaps];
  const DeviceContext ctx(device);  // (the driver encodes descriptors only in a context)
  for (int i = 0; i < kMaps; ++i) {
    if (!tensor_map_arg(&maps[i], spec.tensor_maps[i], *rows[i])) return false;
  }
  // Without lengths the default bias, -log(valid key count), is -log(Tk); with them the kernel
  // derives it per sequence and ignores bias_value.
  const double bias = p.bias_mode == kBiasScalar ? p.bias_value
                                                 : -std::log(static_cast<double>(p.Tk));
  // Persistent: one program per SM at most, each walking the (query block, head, batch) tiles
  // pid, pid + grid, ... (the kernel's _tile/_schedule); fewer when there are fewer tiles. A
  // packed batch's tile count is the kernel's to find (from cu_seqlens); this bounds it: each
  // sequence's tiles are at most its rows / block_m + 1, and the tail's too.
  const uint64_t tiles = p.varlen
                             ? uint64_t(p.Tq / spec.block_m + p.B + 1) * p.Hq
                             : uint64_t(cdiv(p.Tq, spec.block_m)) * p.Hq * p.B;
  const uint64_t programs = std::min<uint64_t>(tiles, uint64_t(sm_count(device)));
  if (programs == 0) return false;
  const CUstream stream = current_stream(device);
  // The tiles past the last whole wave (fewer than the programs) would leave the other SMs
  // idle while they run: split by key blocks over every program instead (sigmoid attention
  // joins the pieces of a tile by a plain sum).
  Schedule schedule;
  std::optional<Tensor> ws, flags;  // (alive until the launch is queued: stream-ordered reuse)
  const uint64_t rest = tiles % programs;
  const int64_t key_blocks = cdiv(p.Tk, spec.block_n);
  // (the kernel spreads rest x key blocks units over the programs in int32 products of them)
  const uint64_t units = rest * uint64_t(key_blocks);
  // Short keys: the flags' memset (a stream-ordered node before the kernel) and the pieces'
  // fp32 joins are fixed costs against a short kernel. Measured (H200, hd128, 2,048 tiles:
  // 15.5 waves) split against whole tiles: T = 1k 0.95x (8 key blocks a tile), 4k and 16k
  // 1.07-1.08x; at T = 2k (16 blocks) 0.97-1.00x over 8.2-16.2 waves.
  constexpr int64_t kMinSplitKeyBlocks = 32;
  const int split_mode = split_wave_dispatch();
  if (splits_last_wave(spec) && tiles > programs && rest != 0 &&
      (split_mode == 2 || (split_mode == 1 && key_blocks >= kMinSplitKeyBlocks)) &&
      (units + 1) * (programs + 1) < uint64_t(INT32_MAX)) {
    constexpr int kConsumers = 2;
    ws = empty_cuda(like, {int64_t(programs), spec.block_m, block_d(spec)},
                    torch::headeronly::ScalarType::Float);
    flags = empty_cuda(like, {int64_t(rest) * kConsumers}, torch::headeronly::ScalarType::Int);
    memset_d32(device, stream, dptr(*flags), 0u, static_cast<size_t>(rest) * kConsumers);
    schedule = Schedule{dptr(*ws), dptr(*flags), 1};
  } else if (spec.kind == KernelKind::kForwardGluonPadded && tiles > programs &&
             tile_queue_dispatch()) {
    // Lengths, more tiles than programs: a queue (a program given heavy tiles, or slowed by its
    // neighbours, takes fewer). A packed call's count is a bound: the kernel ends the queue at
    // the last tile it finds.
    flags = empty_cuda(like, {1}, torch::headeronly::ScalarType::Int);
    memset_d32(device, stream, dptr(*flags), 0u, 1);
    schedule = Schedule{0, dptr(*flags), 2};
  }
  if (spec.kind == KernelKind::kForwardGluonPadded) {
    auto args = p.varlen
                    ? gluon_args<ForwardGluonPaddedArgs>(maps, p, e, bias, schedule, ops.o.ptr,
                                                         static_cast<int32_t>(ops.o.st))
                    : gluon_args<ForwardGluonPaddedArgs>(maps, p, e, bias, schedule);
    launch(kernel, device, stream, static_cast<unsigned>(programs), 1, 1, args);
  } else {
    auto args = gluon_args<ForwardGluonArgs>(maps, p, e, bias, schedule);
    launch(kernel, device, stream, static_cast<unsigned>(programs), 1, 1, args);
  }
  return true;
}

// Dense: q, k, v, out are [B, T, H, D], lens are seq_lens (optional). Packed (p.varlen): they
// are [total, H, D] and lens are cu_seqlens.
void launch_forward(const ForwardProblem& p, const Tensor& q, const Tensor& k, const Tensor& v,
                    const Tensor& out, const std::optional<Tensor>& lens_q,
                    const std::optional<Tensor>& lens_k, const std::optional<Tensor>& bias,
                    const std::optional<Tensor>& score_mod, bool is_causal) {
  const int device = q.get_device_index();
  // int32 lengths, a float32 bias tensor and score_mod (converted on the device when given
  // otherwise); they outlive the launches, which is all stream order needs.
  Extras e = extras(lens_q, lens_k, bias, score_mod, p.bias_mode, p.max_k);
  // The Gluon forward reads score_mod on dense non-causal calls without lengths (the variant
  // compiled), rows contiguous along keys, an even number of floats apart and 8-byte aligned
  // (its loads take a thread's two adjacent columns at once).
  const bool gluon_mod =
      !e.mod.has_value() || (!p.varlen && !lens_q.has_value() && !lens_k.has_value() &&
                             !is_causal && e.mod_st == 1 && e.mod_sb % 2 == 0 &&
                             e.p_mod % 8 == 0);
  if (gluon_mod) {
    const bool padded = lens_q.has_value() && lens_k.has_value();
    const auto g = gluon_operands(p, q, k, v, out, lens_q.has_value(), lens_k.has_value(),
                                  is_causal);
    if (g.has_value()) {
      const int kernel = select_forward(p.dtype, p.D, is_causal, e.mod.has_value(), p.varlen,
                                        p.max_q, p.Tq, p.B, p.Hq, sm_count(device), false, true,
                                        padded);
      const KernelKind kind = kKernels[kernel].kind;
      if ((kind == KernelKind::kForwardGluon || kind == KernelKind::kForwardGluonPadded) &&
          launch_gluon(kernel, p, *g, device, e, q)) {
        return;
      }
    }
  }
  // The warp-specialized forward reads score_mod through 1-D TMA descriptors, one per
  // sequence: rows contiguous along keys and 16-byte aligned, dense batches only (no packed
  // score_mod variant is compiled); anything else takes the other kernel.
  const bool ws = warp_specialized_dispatch() &&
                  (!e.mod.has_value() ||
                   (!p.varlen && e.mod_st == 1 && e.mod_sb % 4 == 0 && e.p_mod % 16 == 0));
  const int kernel = select_forward(p.dtype, p.D, is_causal, score_mod.has_value(),
                                    p.varlen, p.max_q, p.Tq, p.B, p.Hq, sm_count(device), ws);
  const KernelSpec& spec = kKernels[kernel];
  const int sm = spec.stride_multiple;
  const Operand oq = operand(q, p.max_q, sm), ok = operand(k, p.max_k, sm),
                ov = operand(v, p.max_k, sm), oo = operand(out, p.max_q, sm);
  const int32_t has_lq = !p.varlen && e.lens_q.has_value(),
                has_lk = !p.varlen && e.lens_k.has_value();
  const unsigned grid_x = forward_grid_x(spec, p.varlen, p.Tq, p.B);
  const unsigned grid_y = static_cast<unsigned>(p.Hq);
  const unsigned grid_z = p.varlen ? 1u : static_cast<unsigned>(p.B);
  const CUstream stream = current_stream(device);
  const int32_t t_q = static_cast<int32_t>(p.Tq), t_k = static_cast<int32_t>(p.Tk),
                kv_group = static_cast<int32_t>(p.Hq / p.Hkv),
                num_seqs = static_cast<int32_t>(p.B), max_q = static_cast<int32_t>(p.max_q),
                max_k = static_cast<int32_t>(p.max_k);
  const float scale = static_cast<float>(p.scale), bias_value = static_cast<float>(p.bias_value);
  if (spec.kind == KernelKind::kForwardWS) {  // no score_mod key stride: contiguous keys
    ForwardWSArgs args{
        .Q = oq.ptr, .K = ok.ptr, .V = ov.ptr, .O = oo.ptr,
        .SEQ_LENS_Q = e.p_lens_q, .SEQ_LENS_K = e.p_lens_k, .BIAS = e.p_bias, .SCORE_MOD = e.p_mod,
        .stride_qb = oq.sb, .stride_qt = oq.st, .stride_qh = oq.sh,
        .stride_kb = ok.sb, .stride_kt = ok.st, .stride_kh = ok.sh,
        .stride_vb = ov.sb, .stride_vt = ov.st, .stride_vh = ov.sh,
        .stride_ob = oo.sb, .stride_ot = oo.st, .stride_oh = oo.sh,
        .stride_smb = e.mod_sb,
        .T_Q = t_q, .T_K = t_k, .kv_group = kv_group, .scale = scale, .bias_value = bias_value,
        .HAS_SEQ_LENS_Q = has_lq, .HAS_SEQ_LENS_K = has_lk, .BIAS_MODE = p.bias_mode,
        .num_seqs = num_seqs, .max_seqlen_q = max_q, .max_seqlen_k = max_k};
    launch(kernel, device, stream, grid_x, grid_y, grid_z, args);
    return;
  }
  ForwardArgs args{
      .Q = oq.ptr, .K = ok.ptr, .V = ov.ptr, .O = oo.ptr,
      .SEQ_LENS_Q = e.p_lens_q, .SEQ_LENS_K = e.p_lens_k, .BIAS = e.p_bias, .SCORE_MOD = e.p_mod,
      .stride_qb = oq.sb, .stride_qt = oq.st, .stride_qh = oq.sh,
      .stride_kb = ok.sb, .stride_kt = ok.st, .stride_kh = ok.sh,
      .stride_vb = ov.sb, .stride_vt = ov.st, .stride_vh = ov.sh,
      .stride_ob = oo.sb, .stride_ot = oo.st, .stride_oh = oo.sh,
      .stride_smb = e.mod_sb, .stride_smt = e.mod_st,
      .T_Q = t_q, .T_K = t_k, .kv_group = kv_group, .scale = scale, .bias_value = bias_value,
      .HAS_SEQ_LENS_Q = has_lq, .HAS_SEQ_LENS_K = has_lk, .BIAS_MODE = p.bias_mode,
      .num_seqs = num_seqs, .max_seqlen_q = max_q, .max_seqlen_k = max_k,
      .head_dim = static_cast<int32_t>(p.D)};
  launch(kernel, device, stream, grid_x, grid_y, grid_z, args);
}

}  // namespace

namespace {

ForwardProblem check(SIGMOID_ATTN_FORWARD_ARGS) {
  return check_forward({SIGMOID_ATTN_FORWARD_PASS}, Backend::kCUDA);
}
ForwardProblem check(SIGMOID_ATTN_VARLEN_ARGS) {
  return check_forward_varlen({SIGMOID_ATTN_VARLEN_PASS}, Backend::kCUDA);
}

}  // namespace

Tensor forward_cuda(SIGMOID_ATTN_FORWARD_ARGS) {
  const ForwardProblem p = check(SIGMOID_ATTN_FORWARD_PASS);
  Tensor out = empty_cuda(q, {p.B, p.Tq, p.Hq, p.D}, p.dtype);
  if (p.B == 0 || p.Tq == 0 || p.Hq == 0) return out;
  launch_forward(p, q, k, v, out, seq_lens_q, seq_lens_k, sigmoid_bias_tensor, score_mod,
                 is_causal);
  return out;
}

void forward_cuda_out(SIGMOID_ATTN_FORWARD_ARGS, const Tensor& out) {
  const ForwardProblem p = check(SIGMOID_ATTN_FORWARD_PASS);
  check_out(out, {p.B, p.Tq, p.Hq, p.D}, q, k, v, seq_lens_q, seq_lens_k, sigmoid_bias_tensor,
            score_mod);
  if (p.B == 0 || p.Tq == 0 || p.Hq == 0) return;
  launch_forward(p, q, k, v, out, seq_lens_q, seq_lens_k, sigmoid_bias_tensor, score_mod,
                 is_causal);
}

Tensor forward_varlen_cuda(SIGMOID_ATTN_VARLEN_ARGS) {
  const ForwardProblem p = check(SIGMOID_ATTN_VARLEN_PASS);
  Tensor out = empty_cuda(q, {p.Tq, p.Hq, p.D}, p.dtype);
  if (p.Tq == 0 || p.Hq == 0) return out;
  launch_forward(p, q, k, v, out, cu_seqlens_q, cu_seqlens_k, sigmoid_bias_tensor, score_mod,
                 is_causal);
  return out;
}

void forward_varlen_cuda_out(SIGMOID_ATTN_VARLEN_ARGS, const Tensor& out) {
  const ForwardProblem p = check(SIGMOID_ATTN_VARLEN_PASS);
  check_out(out, {p.Tq, p.Hq, p.D}, q, k, v, cu_seqlens_q, cu_seqlens_k, sigmoid_bias_tensor,
            score_mod);
  if (p.Tq == 0 || p.Hq == 0) return;
  launch_forward(p, q, k, v, out, cu_seqlens_q, cu_seqlens_k, sigmoid_bias_tensor, score_mod,
                 is_causal);
}

}  // namespace sigmoid_attn
