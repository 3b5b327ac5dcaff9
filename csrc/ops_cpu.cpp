// CPU forward and backward, tiled: blocks of queries by keys go through torch's CPU GEMM
// (cpu_gemm.h) in the accumulation type (double for float64 inputs, float otherwise), with the
// scale, bias, score_mod, sigmoid and mask applied to each score tile between the products.
// Tasks run on torch's intra-op threads; each output element has a single writer, so results
// are the same bits for any thread count. Serves CPU tensors (and float64 for gradcheck) and is
// a second reference for the CUDA kernels: different code, same semantics.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#include <torch/csrc/stable/ops.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include "alloc.h"
#include "check.h"
#include "cpu_gemm.h"
#include "cpu_sigmoid.h"
#include "kernel_spec.h"
#include "ops.h"
#include "validate.h"

namespace sigmoid_attn {

namespace {

using torch::headeronly::ScalarType;

int64_t clamp_len(const std::optional<Tensor>& lens, int64_t b, int64_t T) {
  if (!lens.has_value()) return T;
  const int32_t n = lens->const_data_ptr<int32_t>()[b * lens->stride(0)];
  return std::min<int64_t>(std::max<int64_t>(n, 0), T);  // same clamp as the kernels
}

// Where sequence b lives: q rows q0 .. q0 + Lq of batch entry qb (of Tq_own rows written), and
// k/v rows k0 .. k0 + Lk of entry kb. Dense: entry b, offset 0, lengths clamped to T. Packed:
// entry 0 (the tensors are viewed as [1, total, H, D]), offsets from cu_seqlens clamped to the
// tensor, lengths clamped to max_seqlen, exactly as the kernels do.
struct Seg {
  int64_t qb, q0, Lq, q_own, kb, k0, Lk, k_own;
};

// Everything a task needs besides the tensors' element type.
struct Common {
  ForwardProblem p;
  const std::optional<Tensor>& lens_q;  // seq_lens, or cu_seqlens when p.varlen
  const std::optional<Tensor>& lens_k;
  bool causal;
  const Tensor* bias;  // float64 [B] or null
  const Tensor* mod;   // float64 [B, Tk] (packed: [1, total_k]) or null

  Seg seg(int64_t b) const {
    if (!p.varlen) {
      const int64_t Lq = clamp_len(lens_q, b, p.Tq), Lk = clamp_len(lens_k, b, p.Tk);
      return Seg{b, 0, Lq, p.Tq, b, 0, Lk, p.Tk};
    }
    auto range = [&](const Tensor& cu, int64_t total, int64_t max_len, int64_t& off, int64_t& len) {
      const int32_t* c = cu.const_data_ptr<int32_t>();
      const int64_t st = cu.stride(0);
      off = std::min<int64_t>(std::max<int64_t>(c[b * st], 0), total);
      const int64_t end = std::min<int64_t>(std::max<int64_t>(c[(b + 1) * st], off), total);
      len = std::min(end - off, max_len);
    };
    Seg s{};
    range(*lens_q, p.Tq, p.max_q, s.q0, s.Lq);
    range(*lens_k, p.Tk, p.max_k, s.k0, s.Lk);
    s.q_own = s.Lq;  // rows outside every sequence are zero-filled up front
    s.k_own = s.Lk;
    return s;
  }

  template <typename A>
  A bias_of(int64_t b, int64_t Lk) const {
    if (p.bias_mode == kBiasDefault) return -std::log(static_cast<A>(std::max<int64_t>(Lk, 1)));
    if (p.bias_mode == kBiasScalar) return static_cast<A>(p.bias_value);
    return static_cast<A>(bias->const_data_ptr<double>()[b]);
  }
  template <typename A>
  A mod_of(const Seg& s, int64_t j) const {
    return mod ? static_cast<A>(mod->const_data_ptr<double>()[s.kb * mod->stride(0) +
                                                              (s.k0 + j) * mod->stride(1)])
               : A(0);
  }
};

template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;
template <typename A>
constexpr ScalarType kAccType = std::is_same_v<A, double> ? ScalarType::Double : ScalarType::Float;

// Element (b, i, h, 0) of a [B, T, H, D] tensor, or (i, h, 0) of a packed [total, H, D] one
// (b is then 0). Pointer and strides are read once per call: each Tensor accessor is a call
// into torch's shim, too slow to make per row.
template <typename T>
struct Rows {
  T* data;
  int64_t sb, st, sh;
  explicit Rows(const Tensor& t)
      : data(const_cast<T*>(t.const_data_ptr<std::remove_const_t<T>>())),
        sb(t.dim() == 3 ? 0 : t.stride(0)),
        st(t.stride(t.dim() - 3)),
        sh(t.stride(t.dim() - 2)) {}
  int64_t off(int64_t b, int64_t i, int64_t h) const { return b * sb + i * st + h * sh; }
  T* at(int64_t b, int64_t i, int64_t h) const { return data + off(b, i, h); }
};

// t itself when it is already in the accumulation type, else one converted copy per call (O(T D),
// against the O(T^2 D) products that then read it tile by tile). Read through its own strides.
template <typename A>
Tensor in_acc(const Tensor& t) {
  return t.scalar_type() == kAccType<A> ? t : torch::stable::to(t, kAccType<A>);
}

// A worker's scratch tile. 64-byte aligned: torch's BLAS may take different code paths (and
// round differently) for differently aligned operands, and the results must not depend on
// which worker, with which buffer, ran a task.
template <typename A>
class Buf {
 public:
  A* get(int64_t n) {
    if (n > cap_) {
      data_.reset(new (std::align_val_t(64)) A[n]);
      cap_ = n;
    }
    return data_.get();
  }

 private:
  struct Free {
    void operator()(A* p) const { ::operator delete[](p, std::align_val_t(64)); }
  };
  std::unique_ptr<A[], Free> data_;
  int64_t cap_ = 0;
};

// Runs task(i, workspace) for i in [0, n) on torch's intra-op threads (torch.set_num_threads),
// each worker taking the next task when done with one: causal tasks differ in cost, and a static
// split would leave a thread idle. Every output element is written by exactly one task, in an
// order fixed by the problem, so the result does not depend on the thread count. With two or
// more threads the workers always run inside the parallel region, even for a single task:
// torch's BLAS is then single-threaded in each (it could otherwise split a product differently).
template <typename Ws, typename F>
void run_tasks(int64_t n, const F& task) {
  if (n <= 0) return;
  std::atomic<int64_t> next{0};
  const int64_t workers = std::max<int64_t>(1, torch::stable::get_num_threads());
  torch::stable::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    // Kept by the pool's thread from call to call: a score tile is 256 KiB, which malloc would
    // map and fault in afresh on every call.
    static thread_local Ws ws;
    for (int64_t i = next++; i < n; i = next++) task(i, ws);
  });
}

using cpu::Mat;
using cpu::rows_of;

// p = sigmoid(scale * q k^T + colbias), m query rows from i0 by n keys from j0 of one sequence,
// into p (m x n, row-major); zero where the causal mask hides key j0 + c from query i0 + r.
// colbias[c] = bias + score_mod of key j0 + c.
template <typename A>
void score_tile(const Mat& q, const Mat& k, A* p, int64_t m, int64_t n, int64_t i0, int64_t j0,
                const A* colbias, A scale, bool causal) {
  cpu::mm_out(q, k.t(), rows_of(p, m, n, n), kAccType<A>);
  if constexpr (std::is_same_v<A, float>) {
    cpu::scale_bias_sigmoid(p, m, n, colbias, scale);
  } else {
    for (int64_t r = 0; r < m; ++r) {
      A* pr = p + r * n;
      for (int64_t c = 0; c < n; ++c) pr[c] = pr[c] * scale + colbias[c];
    }
    cpu::sigmoid_(rows_of(p, m, n, n), kAccType<A>);
  }
  if (causal && j0 + n - 1 > i0) {
    for (int64_t r = 0; r < m; ++r) {
      const int64_t c0 = std::clamp<int64_t>(i0 + r + 1 - j0, 0, n);
      std::fill(p + r * n + c0, p + (r + 1) * n, A(0));
    }
  }
}

template <typename A>
void fill_colbias(const Common& c, const Seg& sg, A bias, int64_t j0, int64_t n, A* out) {
  for (int64_t j = 0; j < n; ++j) out[j] = bias + c.mod_of<A>(sg, j0 + j);
}

// Forward tiles: up to 512 keys by 256 query rows, or 128 under causal (a smaller query block
// skips more of the key blocks past its diagonal). The fp32 score tile (at most 512 KiB) and
// V's block stay in a core's 2 MiB L2 between the two products, and each product is large
// enough for the BLAS to run near its peak (~95 GFLOP/s per core here at 128x64x256, ~70 at
// 64x64x64); 256 rows rather than 128 took 10% off a T=256 forward on 2 cores (fewer, larger
// products). A fixed function of the problem, never of the thread count.
inline int64_t fwd_rows(bool causal) { return causal ? 128 : 256; }
constexpr int64_t kFwdKeys = 512;

template <typename A>
struct FwdWs {
  Buf<A> p, o, t, cb;
};

// One task per (query block, batch, q head): it alone writes those output rows.
template <typename T>
void forward_impl(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, const Common& c) {
  using A = acc_t<T>;
  const ForwardProblem& p = c.p;
  const Tensor qa = in_acc<A>(q), ka = in_acc<A>(k), va = in_acc<A>(v);
  const int64_t D = p.D, group = p.Hq / p.Hkv, BH = p.B * p.Hq;
  const int64_t bm = fwd_rows(c.causal);
  const int64_t nqb = ((p.varlen ? p.max_q : p.Tq) + bm - 1) / bm;
  const Rows<const A> qr(qa), kr(ka), vr(va);
  const Rows<T> outr(out);
  const A scale = static_cast<A>(p.scale);
  run_tasks<FwdWs<A>>(nqb * BH, [&](int64_t task, FwdWs<A>& ws) {
    const int64_t qb = nqb - 1 - task / BH;  // last query blocks first: under causal the costliest
    const int64_t b = (task % BH) / p.Hq, h = task % p.Hq, hk = h / group;
    const Seg sg = c.seg(b);
    const int64_t i0 = qb * bm;
    if (i0 >= sg.q_own) return;
    const int64_t rows = std::min(bm, sg.q_own - i0);
    const int64_t m = std::clamp<int64_t>(sg.Lq - i0, 0, rows);  // rows with a query
    const int64_t kend = m == 0 ? 0 : c.causal ? std::min(sg.Lk, i0 + m) : sg.Lk;
    A* o = ws.o.get(rows * D);
    std::fill(o, o + rows * D, A(0));
    if (kend > 0) {
      const A bias = c.bias_of<A>(b, sg.Lk);
      const Mat qt = rows_of(qr.at(sg.qb, sg.q0 + i0, h), m, D, qr.st);
      const int64_t nmax = std::min(kFwdKeys, kend);
      A* pt = ws.p.get(m * nmax);
      A* tmp = ws.t.get(m * D);
      A* cb = ws.cb.get(nmax);
      for (int64_t j0 = 0; j0 < kend; j0 += kFwdKeys) {
        const int64_t n = std::min(kFwdKeys, kend - j0);
        fill_colbias(c, sg, bias, j0, n, cb);
        score_tile(qt, rows_of(kr.at(sg.kb, sg.k0 + j0, hk), n, D, kr.st), pt, m, n, i0, j0, cb,
                   scale, c.causal);
        const Mat vt = rows_of(vr.at(sg.kb, sg.k0 + j0, hk), n, D, vr.st);
        cpu::mm_out(rows_of(pt, m, n, n), vt, rows_of(j0 == 0 ? o : tmp, m, D, D), kAccType<A>);
        if (j0 > 0) {
          for (int64_t x = 0; x < m * D; ++x) o[x] += tmp[x];
        }
      }
    }
    for (int64_t r = 0; r < rows; ++r) {  // rows past Lq: zero
      T* orow = outr.at(sg.qb, sg.q0 + i0 + r, h);
      for (int64_t d = 0; d < D; ++d) orow[d] = static_cast<T>(o[r * D + d]);
    }
  });
}

// Backward tiles: 256 keys (their dK, dV accumulators, 2 x 64 KiB, stay in L2 while every
// query of the group streams past) by 256 query rows (the inner dimension of the dK and dV
// products).
constexpr int64_t kBwdRows = 256;
constexpr int64_t kBwdKeys = 256;
// Each (batch, kv head) is cut into this many tasks or more along its keys (never more chunks
// than key blocks): a fixed number, not the thread count, so that dQ's sum over chunks runs in
// the same order, and gives the same bits, under any torch.set_num_threads.
constexpr int64_t kMinBwdTasks = 16;

template <typename A>
struct BwdWs {
  Buf<A> p, dp, t, dk, dv, cb, dq;
  Buf<double> dm;
};

// One task per (key chunk, batch, kv head): it alone writes dK, dV and dmod of its keys, and its
// own dQ partial (chunks x dq's size, summed in chunk order after). With a single chunk the task
// sees every key of its query rows and writes their dQ itself: no partial buffer to clear and
// no second parallel pass.
template <typename T>
void backward_impl(const Tensor& g, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& dq,
                   Tensor& dk, Tensor& dv, double* dmod_heads, const Common& c) {
  using A = acc_t<T>;
  const ForwardProblem& p = c.p;
  const Tensor qa = in_acc<A>(q), ka = in_acc<A>(k), va = in_acc<A>(v), ga = in_acc<A>(g);
  const int64_t D = p.D, group = p.Hq / p.Hkv, BHk = p.B * p.Hkv;
  const Rows<const A> qr(qa), kr(ka), vr(va), gr(ga);
  const Rows<T> dqr(dq), dkr(dk), dvr(dv);
  const int64_t nkb_max = ((p.varlen ? p.max_k : p.Tk) + kBwdKeys - 1) / kBwdKeys;
  const int64_t chunks =
      std::clamp<int64_t>((kMinBwdTasks + BHk - 1) / BHk, 1, std::max<int64_t>(nkb_max, 1));
  const int64_t qsize = dq.numel();  // dq is contiguous: the partials share its flat layout
  std::vector<A> part(chunks > 1 ? chunks * qsize : 0, A(0));
  const A scale = static_cast<A>(p.scale);
  run_tasks<BwdWs<A>>(chunks * BHk, [&](int64_t task, BwdWs<A>& ws) {
    const int64_t chunk = task / BHk, b = (task % BHk) / p.Hkv, hk = task % p.Hkv;
    const Seg sg = c.seg(b);
    const int64_t nkb = (sg.Lk + kBwdKeys - 1) / kBwdKeys;
    const int64_t kb_lo = nkb * chunk / chunks, kb_hi = nkb * (chunk + 1) / chunks;
    const bool own_dq = chunks == 1;
    A* dqa = own_dq ? ws.dq.get(group * sg.Lq * D) : part.data() + chunk * qsize;
    if (own_dq) std::fill(dqa, dqa + group * sg.Lq * D, A(0));
    auto dq_row = [&](int64_t i, int64_t h) {  // row i of sequence b, head h
      return own_dq ? dqa + ((h - hk * group) * sg.Lq + i) * D
                    : dqa + dqr.off(sg.qb, sg.q0 + i, h);
    };
    const A bias = c.bias_of<A>(b, sg.Lk);
    const int64_t mmax = std::min(kBwdRows, sg.Lq);
    A *pt = ws.p.get(mmax * kBwdKeys), *dpt = ws.dp.get(mmax * kBwdKeys);
    A* tmp = ws.t.get(std::max(mmax, kBwdKeys) * D);
    A *dka = ws.dk.get(kBwdKeys * D), *dva = ws.dv.get(kBwdKeys * D), *cb = ws.cb.get(kBwdKeys);
    double* dm = ws.dm.get(kBwdKeys);
    // dmod_heads is [B, Hkv, Tk] dense, [1, Hkv, total_k] packed.
    double* dmh = dmod_heads ? dmod_heads + (sg.kb * p.Hkv + hk) * p.Tk + sg.k0 : nullptr;
    for (int64_t kb = kb_lo; kb < kb_hi; ++kb) {
      const int64_t j0 = kb * kBwdKeys, n = std::min(kBwdKeys, sg.Lk - j0);
      fill_colbias(c, sg, bias, j0, n, cb);
      std::fill(dka, dka + n * D, A(0));
      std::fill(dva, dva + n * D, A(0));
      std::fill(dm, dm + n, 0.0);
      const Mat kt = rows_of(kr.at(sg.kb, sg.k0 + j0, hk), n, D, kr.st);
      const Mat vt = rows_of(vr.at(sg.kb, sg.k0 + j0, hk), n, D, vr.st);
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        // Under causal, queries before j0 see none of these keys.
        for (int64_t i0 = c.causal ? j0 : 0; i0 < sg.Lq; i0 += kBwdRows) {
          const int64_t m = std::min(kBwdRows, sg.Lq - i0);
          const Mat qt = rows_of(qr.at(sg.qb, sg.q0 + i0, h), m, D, qr.st);
          const Mat gt = rows_of(gr.at(sg.qb, sg.q0 + i0, h), m, D, gr.st);
          score_tile(qt, kt, pt, m, n, i0, j0, cb, scale, c.causal);
          cpu::mm_out(gt, vt.t(), rows_of(dpt, m, n, n), kAccType<A>);
          for (int64_t r = 0; r < m; ++r) {  // dS = dP * P (1 - P); masked P = 0 gives dS = 0
            A* dsr = dpt + r * n;
            const A* pr = pt + r * n;
            for (int64_t j = 0; j < n; ++j) dsr[j] = dsr[j] * pr[j] * (A(1) - pr[j]);
            if (dmh) {
              for (int64_t j = 0; j < n; ++j) dm[j] += static_cast<double>(dsr[j]);
            }
          }
          const Mat P = rows_of(pt, m, n, n), dS = rows_of(dpt, m, n, n);
          cpu::mm_out(P.t(), gt, rows_of(tmp, n, D, D), kAccType<A>);
          for (int64_t x = 0; x < n * D; ++x) dva[x] += tmp[x];
          cpu::mm_out(dS.t(), qt, rows_of(tmp, n, D, D), kAccType<A>);
          for (int64_t x = 0; x < n * D; ++x) dka[x] += tmp[x];
          cpu::mm_out(dS, kt, rows_of(tmp, m, D, D), kAccType<A>);
          for (int64_t r = 0; r < m; ++r) {
            A* dqrow = dq_row(i0 + r, h);
            for (int64_t d = 0; d < D; ++d) dqrow[d] += tmp[r * D + d];
          }
        }
      }
      for (int64_t j = 0; j < n; ++j) {
        T* dkrow = dkr.at(sg.kb, sg.k0 + j0 + j, hk);
        T* dvrow = dvr.at(sg.kb, sg.k0 + j0 + j, hk);
        for (int64_t d = 0; d < D; ++d) {
          dkrow[d] = static_cast<T>(dka[j * D + d] * scale);
          dvrow[d] = static_cast<T>(dva[j * D + d]);
        }
      }
      if (dmh) std::copy(dm, dm + n, dmh + j0);
    }
    if (!own_dq) return;
    for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
      for (int64_t i = 0; i < sg.q_own; ++i) {  // rows past Lq: zero
        T* out = dqr.at(sg.qb, sg.q0 + i, h);
        const A* acc = i < sg.Lq ? dq_row(i, h) : nullptr;
        for (int64_t d = 0; d < D; ++d) out[d] = static_cast<T>(acc ? acc[d] * scale : A(0));
      }
    }
  });
  if (chunks == 1) return;
  // dQ = scale * sum over chunks, in chunk order; elementwise, so any split of it is exact.
  T* dqd = dq.mutable_data_ptr<T>();
  torch::stable::parallel_for(0, qsize, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t x = begin; x < end; ++x) {
      A s = part[x];
      for (int64_t ch = 1; ch < chunks; ++ch) s += part[ch * qsize + x];
      dqd[x] = static_cast<T>(s * scale);
    }
  });
}

template <typename F>
void dispatch_dtype(ScalarType dt, F&& f) {
  switch (dt) {
    case ScalarType::Double: f(double{}); break;
    case ScalarType::Float: f(float{}); break;
    case ScalarType::Half: f(torch::headeronly::Half{}); break;
    case ScalarType::BFloat16: f(torch::headeronly::BFloat16{}); break;
    default: SA_CHECK(false, "sigmoid_attention: unsupported CPU dtype ", toString(dt));
  }
}

std::optional<Tensor> as_f64(const std::optional<Tensor>& t) {
  if (!t.has_value()) return std::nullopt;
  return torch::stable::contiguous(torch::stable::to(*t, ScalarType::Double));
}

}  // namespace

namespace {

void forward_into(const ForwardProblem& p, SIGMOID_ATTN_FORWARD_ARGS, Tensor& out) {
  if (out.numel() == 0) return;
  const auto bias = p.bias_mode == kBiasTensor ? as_f64(sigmoid_bias_tensor) : std::nullopt;
  const auto mod = as_f64(score_mod);
  const Common c{p, seq_lens_q, seq_lens_k, is_causal, bias ? &*bias : nullptr,
                 mod ? &*mod : nullptr};
  dispatch_dtype(q.scalar_type(), [&](auto tag) {
    forward_impl<decltype(tag)>(q, k, v, out, c);
  });
}

// `out` zero-filled: rows outside every sequence (past cu_seqlens_q[B]) stay zero.
void forward_varlen_into(const ForwardProblem& p, SIGMOID_ATTN_VARLEN_ARGS, Tensor& out) {
  if (out.numel() == 0 || p.B == 0) return;
  const auto bias = p.bias_mode == kBiasTensor ? as_f64(sigmoid_bias_tensor) : std::nullopt;
  auto mod = as_f64(score_mod);
  if (mod) mod = torch::stable::unsqueeze(*mod, 0);  // [1, total_k], indexed like [B, Tk]
  const std::optional<Tensor> cu_q = cu_seqlens_q, cu_k = cu_seqlens_k;
  const Common c{p, cu_q, cu_k, is_causal, bias ? &*bias : nullptr, mod ? &*mod : nullptr};
  dispatch_dtype(q.scalar_type(), [&](auto tag) {
    forward_impl<decltype(tag)>(q, k, v, out, c);
  });
}

}  // namespace

Tensor forward_cpu(SIGMOID_ATTN_FORWARD_ARGS) {
  const ForwardProblem p = check_forward({SIGMOID_ATTN_FORWARD_PASS}, Backend::kCPU);
  Tensor out = empty_cpu(q, {p.B, p.Tq, p.Hq, p.D});
  forward_into(p, SIGMOID_ATTN_FORWARD_PASS, out);
  return out;
}

void forward_cpu_out(SIGMOID_ATTN_FORWARD_ARGS, const Tensor& out) {
  const ForwardProblem p = check_forward({SIGMOID_ATTN_FORWARD_PASS}, Backend::kCPU);
  check_out(out, {p.B, p.Tq, p.Hq, p.D}, q, k, v, seq_lens_q, seq_lens_k, sigmoid_bias_tensor,
            score_mod);
  Tensor o = out;
  forward_into(p, SIGMOID_ATTN_FORWARD_PASS, o);
}

Grads backward_cpu(Tensor grad_out, SIGMOID_ATTN_FORWARD_ARGS,
                   bool /*deterministic: always*/) {
  const ForwardProblem p = check_backward(
      grad_out,
      {q, k, v, seq_lens_q, seq_lens_k, is_causal, scale, sigmoid_bias, sigmoid_bias_tensor,
       score_mod},
      Backend::kCPU);
  Tensor dq = empty_cpu(q, {p.B, p.Tq, p.Hq, p.D});
  Tensor dk = empty_cpu(k, {p.B, p.Tk, p.Hkv, p.D});
  Tensor dv = empty_cpu(v, {p.B, p.Tk, p.Hkv, p.D});
  // Rows past a sequence's keys (and every row when there is no query head) are never written
  // by a task.
  torch::stable::zero_(dk);
  torch::stable::zero_(dv);
  const bool has_mod = score_mod.has_value();
  Tensor dmod_heads = torch::stable::new_zeros(q, {has_mod ? p.B : 0, p.Hkv, p.Tk},
                                               ScalarType::Double);
  if (p.B > 0 && p.Hq > 0) {
    const auto bias = p.bias_mode == kBiasTensor ? as_f64(sigmoid_bias_tensor) : std::nullopt;
    const auto mod = as_f64(score_mod);
    const Common c{p, seq_lens_q, seq_lens_k, is_causal, bias ? &*bias : nullptr,
                   mod ? &*mod : nullptr};
    double* dm = has_mod ? dmod_heads.mutable_data_ptr<double>() : nullptr;
    dispatch_dtype(q.scalar_type(), [&](auto tag) {
      backward_impl<decltype(tag)>(grad_out, q, k, v, dq, dk, dv, dm, c);
    });
  }
  // Same contract as CUDA: float32 [B, Tk] (float64 when the inputs are float64).
  const ScalarType mod_dt = q.scalar_type() == ScalarType::Double ? ScalarType::Double
                                                                  : ScalarType::Float;
  Tensor dmod = has_mod ? torch::stable::to(torch::stable::sum(dmod_heads, std::vector<int64_t>{1}),
                                            mod_dt)
                        : torch::stable::new_empty(q, {0}, ScalarType::Float);
  return Grads{dq, dk, dv, dmod};
}

Tensor forward_varlen_cpu(SIGMOID_ATTN_VARLEN_ARGS) {
  const ForwardProblem p = check_forward_varlen({SIGMOID_ATTN_VARLEN_PASS}, Backend::kCPU);
  Tensor out = torch::stable::new_zeros(q, {p.Tq, p.Hq, p.D});
  forward_varlen_into(p, SIGMOID_ATTN_VARLEN_PASS, out);
  return out;
}

void forward_varlen_cpu_out(SIGMOID_ATTN_VARLEN_ARGS, const Tensor& out) {
  const ForwardProblem p = check_forward_varlen({SIGMOID_ATTN_VARLEN_PASS}, Backend::kCPU);
  check_out(out, {p.Tq, p.Hq, p.D}, q, k, v, cu_seqlens_q, cu_seqlens_k, sigmoid_bias_tensor,
            score_mod);
  Tensor o = out;
  torch::stable::zero_(o);
  forward_varlen_into(p, SIGMOID_ATTN_VARLEN_PASS, o);
}

Grads backward_varlen_cpu(Tensor grad_out, SIGMOID_ATTN_VARLEN_ARGS,
                          bool /*deterministic*/) {
  const ForwardProblem p = check_backward_varlen(
      grad_out,
      {q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, is_causal, scale,
       sigmoid_bias, sigmoid_bias_tensor, score_mod},
      Backend::kCPU);
  Tensor dq = torch::stable::new_zeros(q, {p.Tq, p.Hq, p.D});
  Tensor dk = torch::stable::new_zeros(k, {p.Tk, p.Hkv, p.D});
  Tensor dv = torch::stable::new_zeros(v, {p.Tk, p.Hkv, p.D});
  const bool has_mod = score_mod.has_value();
  Tensor dmod_heads = torch::stable::new_zeros(q, {1, p.Hkv, has_mod ? p.Tk : 0},
                                               ScalarType::Double);
  if (p.B > 0 && p.Hq > 0) {
    const auto bias = p.bias_mode == kBiasTensor ? as_f64(sigmoid_bias_tensor) : std::nullopt;
    auto mod = as_f64(score_mod);
    if (mod) mod = torch::stable::unsqueeze(*mod, 0);
    const std::optional<Tensor> cu_q = cu_seqlens_q, cu_k = cu_seqlens_k;
    const Common c{p, cu_q, cu_k, is_causal, bias ? &*bias : nullptr, mod ? &*mod : nullptr};
    double* dm = has_mod ? dmod_heads.mutable_data_ptr<double>() : nullptr;
    dispatch_dtype(q.scalar_type(), [&](auto tag) {
      backward_impl<decltype(tag)>(grad_out, q, k, v, dq, dk, dv, dm, c);
    });
  }
  const ScalarType mod_dt = q.scalar_type() == ScalarType::Double ? ScalarType::Double
                                                                  : ScalarType::Float;
  Tensor dmod = has_mod ? torch::stable::to(torch::stable::sum(dmod_heads,
                                                               std::vector<int64_t>{0, 1}),
                                            mod_dt)
                        : torch::stable::new_empty(q, {0}, ScalarType::Float);
  return Grads{dq, dk, dv, dmod};
}

}  // namespace sigmoid_attn
