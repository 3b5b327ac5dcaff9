#include "validate.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/headeronly/core/ScalarType.h>
#include "check.h"
#include "sigmoid_attn_constants.h"

namespace sigmoid_attn {

using torch::headeronly::ScalarType;

namespace {

constexpr const char* kFn = "sigmoid_attention";

const char* backend_str(Backend b) {
  switch (b) {
    case Backend::kCPU: return "CPU";
    case Backend::kCUDA: return "CUDA";
    default: return "Meta";
  }
}

bool same_device(const Tensor& a, const Tensor& b) { return a.device() == b.device(); }

std::string device_str(const Tensor& t) {
  auto d = t.device();
  std::string s = d.is_cuda() ? "cuda" : d.is_cpu() ? "cpu" : d.type() == torch::headeronly::DeviceType::Meta ? "meta" : "other";
  if (d.has_index()) s += ":" + std::to_string(static_cast<int>(d.index()));
  return s;
}

// One read of a tensor's metadata: six shim calls (sizes and strides read in place, the dtype
// converted once), instead of one exported call, and for the dtype a chain of them, per query.
// The checks below run on every call; messages are built from the Tensor only on failure.
struct Meta {
  int64_t dim = 0;
  int64_t* sizes = nullptr;
  int64_t* strides = nullptr;
  ScalarType dtype = ScalarType::Undefined;
  int32_t device_type = 0;
  int32_t device_index = 0;

  Meta(const Tensor& t, const char* fn, const char* name) {
    SA_CHECK(t.defined(), fn, ": ", name, " must be a tensor, got an undefined tensor");
    AtenTensorHandle h = t.get();
    SA_CHECK(aoti_torch_get_dim(h, &dim) == AOTI_TORCH_SUCCESS &&
                 aoti_torch_get_sizes(h, &sizes) == AOTI_TORCH_SUCCESS &&
                 aoti_torch_get_strides(h, &strides) == AOTI_TORCH_SUCCESS &&
                 aoti_torch_get_device_type(h, &device_type) == AOTI_TORCH_SUCCESS &&
                 aoti_torch_get_device_index(h, &device_index) == AOTI_TORCH_SUCCESS,
             fn, ": cannot read ", name, "'s metadata");
    dtype = t.scalar_type();
  }
  bool same_device(const Meta& o) const {
    return device_type == o.device_type && device_index == o.device_index;
  }
};

void check_qkv(const Tensor& t, const Meta& m, const char* name, const char* layout) {
  SA_CHECK(m.dim == 4, kFn, ": ", name, " must have 4 dims ", layout, ", got ", m.dim,
                  " dims ", shape_str(t));
  SA_CHECK(m.sizes[3] <= 1 || m.strides[3] == 1, kFn, ": ", name,
                  " must have a contiguous last dim (stride 1), got strides ",
                  "with stride(3)=", m.strides[3]);
}

void check_lengths(const std::optional<Tensor>& t, const char* name, int64_t B, const Tensor& q) {
  if (!t.has_value()) return;
  const Tensor& x = *t;
  const bool ok = x.scalar_type() == ScalarType::Int && x.dim() == 1 && x.size(0) == B;
  SA_CHECK(ok, kFn, ": ", name, " must be int32 of shape [B]=[", B, "], got ",
                  dtype_str(x), " ", shape_str(x));
  SA_CHECK(same_device(x, q), kFn, ": ", name, " must be on q's device ",
                  device_str(q), ", got ", device_str(x));
}

bool is_float(const Tensor& t) {
  auto s = t.scalar_type();
  return s == ScalarType::Float || s == ScalarType::Half || s == ScalarType::BFloat16 ||
         s == ScalarType::Double;
}

// scale and sigmoid_bias (float or [B] tensor) -> p.scale, p.bias_mode, p.bias_value.
void resolve_scalars(const char* kFn, ForwardProblem& p, const std::optional<double>& scale,
                     const std::optional<double>& bias_value, const std::optional<Tensor>& bias,
                     const Tensor& q) {
  // Both scalars reach the CUDA kernels as float32: a finite double beyond float32's range
  // would silently become inf there (0 * inf = NaN), so it is rejected everywhere.
  constexpr double kF32Max = 3.4028234663852886e38;
  if (scale.has_value()) {
    SA_CHECK(std::isfinite(*scale) && std::fabs(*scale) <= kF32Max, kFn,
             ": scale must be finite and within float32 range, got ", *scale);
    p.scale = *scale;
  } else {
    p.scale = 1.0 / std::sqrt(static_cast<double>(p.D));
  }

  SA_CHECK(!(bias_value.has_value() && bias.has_value()), kFn,
           ": give sigmoid_bias as a float or as a tensor, not both");
  p.bias_mode = kBiasDefault;
  p.bias_value = 0.0;
  if (bias_value.has_value()) {
    const double b = *bias_value;
    SA_CHECK(!std::isnan(b) && (std::isinf(b) || std::fabs(b) <= kF32Max), kFn,
             ": sigmoid_bias must be ±inf or within float32 range, and not NaN, got ", b);
    p.bias_mode = kBiasScalar;
    p.bias_value = b;
  } else if (bias.has_value()) {
    const Tensor& b = *bias;
    SA_CHECK(is_float(b) && b.dim() == 1 && b.size(0) == p.B, kFn,
                    ": sigmoid_bias tensor must be floating point of shape [B]=[", p.B, "], got ",
                    dtype_str(b), " ", shape_str(b));
    SA_CHECK(same_device(b, q), kFn, ": sigmoid_bias must be on q's device ",
                    device_str(q), ", got ", device_str(b));
    p.bias_mode = kBiasTensor;
  }
}

// q, k, v: one floating dtype the backend serves, one device.
void check_dtypes(const char* kFn, const Tensor& q, const Tensor& k, const Tensor& v,
                  const Meta& mq, const Meta& mk, const Meta& mv, Backend backend) {
  SA_CHECK(mk.dtype == mq.dtype && mv.dtype == mq.dtype, kFn,
           ": q, k and v must have the same dtype, got q ", dtype_str(q), ", k ", dtype_str(k),
           ", v ", dtype_str(v));
  const auto dt = mq.dtype;
  if (backend == Backend::kCUDA) {
    SA_CHECK(dt == ScalarType::Half || dt == ScalarType::BFloat16 || dt == ScalarType::Float, kFn,
             ": on CUDA q, k, v must be float16, bfloat16 or float32, got ", dtype_str(q));
  } else {
    SA_CHECK(dt == ScalarType::Half || dt == ScalarType::BFloat16 || dt == ScalarType::Float ||
                 dt == ScalarType::Double,
             kFn, ": q, k, v must be float16, bfloat16, float32 or float64 on ",
             backend_str(backend), ", got ", dtype_str(q));
  }
  SA_CHECK(mk.same_device(mq) && mv.same_device(mq), kFn,
           ": q, k and v must be on one device, got q ", device_str(q), ", k ", device_str(k),
           ", v ", device_str(v));
}

void check_grad_out(const char* fn, const Tensor& g, const Tensor& q) {
  bool ok = g.defined() && g.dim() == q.dim();
  for (int64_t d = 0; ok && d < q.dim(); ++d) ok = g.size(d) == q.size(d);
  SA_CHECK(ok, fn, " backward: grad_out must have q's shape ", shape_str(q), ", got ",
           g.defined() ? shape_str(g) : std::string("undefined"));
  SA_CHECK(g.scalar_type() == q.scalar_type(), fn, " backward: grad_out must be ", dtype_str(q),
           " like q, got ", dtype_str(g));
  SA_CHECK(same_device(g, q), fn, " backward: grad_out must be on q's device ", device_str(q),
           ", got ", device_str(g));
  const int last = static_cast<int>(g.dim()) - 1;
  SA_CHECK(g.size(last) <= 1 || g.stride(last) == 1, fn,
           " backward: grad_out must have a contiguous last dim, got stride(", last, ")=",
           g.stride(last));
}

// [first, last) bytes a tensor's elements span (empty for no elements).
std::pair<uintptr_t, uintptr_t> byte_range(const Tensor& t) {
  const auto base = reinterpret_cast<uintptr_t>(t.data_ptr());
  if (t.numel() == 0) return {base, base};
  const int64_t es = static_cast<int64_t>(t.element_size());
  int64_t last = 0;
  for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
  return {base, base + static_cast<uintptr_t>((last + 1) * es)};
}

}  // namespace

void check_out(const Tensor& out, std::initializer_list<int64_t> shape, const Tensor& q,
               const Tensor& k, const Tensor& v, const std::optional<Tensor>& lens_q,
               const std::optional<Tensor>& lens_k, const std::optional<Tensor>& bias,
               const std::optional<Tensor>& score_mod) {
  std::string want = "[";
  bool same = out.defined() && out.dim() == static_cast<int64_t>(shape.size());
  int64_t d = 0;
  for (int64_t n : shape) {
    want += (d ? ", " : "") + std::to_string(n);
    same = same && out.size(d) == n;
    ++d;
  }
  want += "]";
  SA_CHECK(same && out.scalar_type() == q.scalar_type() && same_device(out, q), kFn,
           ": out must be a ", dtype_str(q), " tensor of shape ", want, " on ", device_str(q),
           ", got ",
           out.defined() ? std::string(dtype_str(out)) + " " + shape_str(out) + " on " +
                               device_str(out)
                         : std::string("an undefined tensor"));
  SA_CHECK(out.is_contiguous() && reinterpret_cast<uintptr_t>(out.data_ptr()) % 16 == 0, kFn,
           ": out must be contiguous with a 16-byte aligned start, got strides of ",
           shape_str(out), (out.is_contiguous() ? " (contiguous) starting at a misaligned address"
                                                 : " that are not contiguous"));
  const auto o = byte_range(out);
  const Tensor* ins[] = {&q, &k, &v, lens_q ? &*lens_q : nullptr, lens_k ? &*lens_k : nullptr,
                         bias ? &*bias : nullptr, score_mod ? &*score_mod : nullptr};
  const char* names[] = {"q", "k", "v", "the query lengths", "the key lengths",
                         "sigmoid_bias_tensor", "score_mod"};
  for (int i = 0; i < 7; ++i) {
    if (ins[i] == nullptr) continue;
    const auto r = byte_range(*ins[i]);
    SA_CHECK(o.first == o.second || r.first == r.second || o.second <= r.first ||
                 r.second <= o.first,
             kFn, ": out must not share memory with ", names[i],
             " (the kernel still reads it while out is written)");
  }
}

std::string shape_str(const Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

const char* dtype_str(const Tensor& t) {
  switch (t.scalar_type()) {
    case ScalarType::Float: return "float32";
    case ScalarType::Half: return "float16";
    case ScalarType::BFloat16: return "bfloat16";
    case ScalarType::Double: return "float64";
    case ScalarType::Int: return "int32";
    case ScalarType::Long: return "int64";
    case ScalarType::Bool: return "bool";
    case ScalarType::Short: return "int16";
    case ScalarType::Char: return "int8";
    case ScalarType::Byte: return "uint8";
    case ScalarType::ComplexFloat: return "complex64";
    case ScalarType::ComplexDouble: return "complex128";
    default: return torch::headeronly::toString(t.scalar_type());
  }
}

ForwardProblem check_forward(const ForwardInputs& in, Backend backend) {
  const Tensor& q = in.q;
  const Tensor& k = in.k;
  const Tensor& v = in.v;
  const Meta mq(q, kFn, "q"), mk(k, kFn, "k"), mv(v, kFn, "v");
  check_qkv(q, mq, "q", "[B, Tq, Hq, D]");
  check_qkv(k, mk, "k", "[B, Tk, Hkv, D]");
  check_qkv(v, mv, "v", "[B, Tk, Hkv, D]");

  check_dtypes(kFn, q, k, v, mq, mk, mv, backend);

  ForwardProblem p{};
  p.B = mq.sizes[0];
  p.Tq = mq.sizes[1];
  p.Hq = mq.sizes[2];
  p.D = mq.sizes[3];
  p.Tk = mk.sizes[1];
  p.Hkv = mk.sizes[2];
  p.max_q = p.Tq;
  p.max_k = p.Tk;
  p.varlen = false;
  p.dtype = mq.dtype;
  SA_CHECK(mk.sizes[0] == p.B && mv.sizes[0] == p.B, kFn,
                  ": k and v must have q's batch size B=", p.B, ", got k ", shape_str(k), ", v ",
                  shape_str(v));
  SA_CHECK(mv.sizes[1] == p.Tk && mv.sizes[2] == p.Hkv, kFn,
                  ": v must have k's [Tk, Hkv]=[", p.Tk, ", ", p.Hkv, "], got v ", shape_str(v));
  SA_CHECK(mk.sizes[3] == p.D && mv.sizes[3] == p.D, kFn,
                  ": q, k and v must have the same head_dim D=", p.D, ", got k ", shape_str(k),
                  ", v ", shape_str(v));
  SA_CHECK(p.D > 0, kFn, ": head_dim must be positive, got q ", shape_str(q));
  SA_CHECK(p.Hkv > 0 && p.Hq % p.Hkv == 0, kFn,
                  ": q's heads Hq=", p.Hq, " must be a multiple of k/v's heads Hkv=", p.Hkv);
  if (backend == Backend::kCUDA) {
    // Grid is (ceil(Tq / BLOCK_M), Hq, B): the y and z dims are limited to 65535.
    SA_CHECK(p.B <= 65535 && p.Hq <= 65535, kFn,
                    ": on CUDA B and Hq must be <= 65535, got B=", p.B, ", Hq=", p.Hq);
    SA_CHECK(p.Tq < (int64_t(1) << 31) - 1024 && p.Tk < (int64_t(1) << 31) - 1024, kFn,
                    ": sequence lengths must be < 2^31 - 1024, got Tq=", p.Tq, ", Tk=", p.Tk);
  }

  check_lengths(in.seq_lens_q, "seq_lens_q", p.B, q);
  check_lengths(in.seq_lens_k, "seq_lens_k", p.B, q);

  resolve_scalars(kFn, p, in.scale, in.bias_value, in.bias, q);
  if (in.score_mod.has_value()) {
    const Tensor& m = *in.score_mod;
    SA_CHECK(is_float(m) && m.dim() == 2 && m.size(0) == p.B && m.size(1) == p.Tk, kFn,
                    ": score_mod must be floating point of shape [B, Tk]=[", p.B, ", ", p.Tk,
                    "], got ", dtype_str(m), " ", shape_str(m));
    SA_CHECK(same_device(m, q), kFn, ": score_mod must be on q's device ", device_str(q),
                    ", got ", device_str(m));
  }
  return p;
}

ForwardProblem check_backward(const Tensor& grad_out, const ForwardInputs& in, Backend backend) {
  const ForwardProblem p = check_forward(in, backend);
  check_grad_out(kFn, grad_out, in.q);
  return p;
}

ForwardProblem check_forward_varlen(const VarlenInputs& in, Backend backend) {
  constexpr const char* fn = "sigmoid_attention_varlen";
  const Tensor& q = in.q;
  const Tensor& k = in.k;
  const Tensor& v = in.v;
  const char* names[] = {"q", "k", "v"};
  const Tensor* ts[] = {&q, &k, &v};
  const Meta mq(q, fn, "q"), mk(k, fn, "k"), mv(v, fn, "v");
  const Meta* ms[] = {&mq, &mk, &mv};
  for (int i = 0; i < 3; ++i) {
    const Tensor& t = *ts[i];
    const Meta& m = *ms[i];
    SA_CHECK(m.dim == 3, fn, ": ", names[i], " must have 3 dims [total, H, D], got ", m.dim,
             " dims ", shape_str(t));
    SA_CHECK(m.sizes[2] <= 1 || m.strides[2] == 1, fn, ": ", names[i],
             " must have a contiguous last dim (stride 1), got stride(2)=", m.strides[2]);
  }
  check_dtypes(fn, q, k, v, mq, mk, mv, backend);

  ForwardProblem p{};
  p.Tq = mq.sizes[0];
  p.Hq = mq.sizes[1];
  p.D = mq.sizes[2];
  p.Tk = mk.sizes[0];
  p.Hkv = mk.sizes[1];
  p.varlen = true;
  p.dtype = mq.dtype;
  SA_CHECK(mv.sizes[0] == p.Tk && mv.sizes[1] == p.Hkv, fn, ": v must have k's [total_k, Hkv]=[",
           p.Tk, ", ", p.Hkv, "], got v ", shape_str(v));
  SA_CHECK(mk.sizes[2] == p.D && mv.sizes[2] == p.D, fn,
           ": q, k and v must have the same head_dim D=", p.D, ", got k ", shape_str(k), ", v ",
           shape_str(v));
  SA_CHECK(p.D > 0, fn, ": head_dim must be positive, got q ", shape_str(q));
  SA_CHECK(p.Hkv > 0 && p.Hq % p.Hkv == 0, fn, ": q's heads Hq=", p.Hq,
           " must be a multiple of k/v's heads Hkv=", p.Hkv);

  const Tensor* cus[] = {&in.cu_seqlens_q, &in.cu_seqlens_k};
  const char* cu_names[] = {"cu_seqlens_q", "cu_seqlens_k"};
  for (int i = 0; i < 2; ++i) {
    const Tensor& c = *cus[i];
    SA_CHECK(c.defined() && c.scalar_type() == ScalarType::Int && c.dim() == 1 && c.size(0) >= 1,
             fn, ": ", cu_names[i], " must be int32 of shape [B + 1] (B >= 0), got ",
             c.defined() ? std::string(dtype_str(c)) + " " + shape_str(c)
                         : std::string("an undefined tensor"));
    SA_CHECK(same_device(c, q), fn, ": ", cu_names[i], " must be on q's device ", device_str(q),
             ", got ", device_str(c));
  }
  SA_CHECK(in.cu_seqlens_k.size(0) == in.cu_seqlens_q.size(0), fn,
           ": cu_seqlens_q and cu_seqlens_k must both have B + 1 entries, got ",
           in.cu_seqlens_q.size(0), " and ", in.cu_seqlens_k.size(0));
  p.B = in.cu_seqlens_q.size(0) - 1;
  SA_CHECK(in.max_seqlen_q >= 0 && in.max_seqlen_k >= 0, fn,
           ": max_seqlen_q and max_seqlen_k must be >= 0, got ", in.max_seqlen_q, " and ",
           in.max_seqlen_k);
  // No sequence is longer than its packed tensor.
  p.max_q = std::min(in.max_seqlen_q, p.Tq);
  p.max_k = std::min(in.max_seqlen_k, p.Tk);
  if (backend == Backend::kCUDA) {
    // Grid: (total // BLOCK + B + 1, H): x is 32-bit, y at most 65535.
    SA_CHECK(p.Hq <= 65535, fn, ": on CUDA Hq must be <= 65535, got ", p.Hq);
    SA_CHECK(p.Tq + p.B < (int64_t(1) << 31) - 1024 && p.Tk + p.B < (int64_t(1) << 31) - 1024,
             fn, ": total tokens plus sequences must be < 2^31 - 1024, got total_q=", p.Tq,
             ", total_k=", p.Tk, ", B=", p.B);
  }

  resolve_scalars(fn, p, in.scale, in.bias_value, in.bias, q);
  if (in.score_mod.has_value()) {
    const Tensor& m = *in.score_mod;
    SA_CHECK(is_float(m) && m.dim() == 1 && m.size(0) == p.Tk, fn,
             ": score_mod must be floating point of shape [total_k]=[", p.Tk, "], got ",
             dtype_str(m), " ", shape_str(m));
    SA_CHECK(same_device(m, q), fn, ": score_mod must be on q's device ", device_str(q),
             ", got ", device_str(m));
  }
  return p;
}

ForwardProblem check_backward_varlen(const Tensor& grad_out, const VarlenInputs& in,
                                     Backend backend) {
  const ForwardProblem p = check_forward_varlen(in, backend);
  check_grad_out("sigmoid_attention_varlen", grad_out, in.q);
  return p;
}

}  // namespace sigmoid_attn
