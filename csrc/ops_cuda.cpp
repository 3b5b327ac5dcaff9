// CUDA forward: validate -> pick the compiled variant -> pack arguments -> launch on the
// current stream. No host synchronization: lengths stay on the device, so the call is
// CUDA-graph capturable.
#include <dlfcn.h>

#include <climits>
#include <cstdint>

#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/ops.h>
#include "check.h"

#include "dispatch.h"
#include "kernel_spec.h"
#include "launch.h"
#include "ops.h"
#include "validate.h"

namespace sigmoid_attn {

namespace {

using torch::headeronly::ScalarType;

// A q/k/v operand as the kernel sees it: base pointer and (batch, row, head) strides.
struct Operand {
  Tensor keep;  // owns the copy when the input had to be realigned
  CUdeviceptr ptr;
  int64_t sb, st, sh;
};

int64_t stride_or_zero(const Tensor& t, int d) { return t.size(d) == 1 ? 0 : t.stride(d); }

// Kernels are compiled assuming 16-byte aligned bases and strides that are multiples of 16
// elements (Triton then issues 16-byte vector loads). Dims of size 1 never move the pointer,
// so their stride is passed as 0. Anything else is copied once into a contiguous buffer.
Operand operand(const Tensor& t) {
  Operand o{t, 0, stride_or_zero(t, 0), stride_or_zero(t, 1), stride_or_zero(t, 2)};
  auto aligned = [](const Operand& x) {
    return reinterpret_cast<uintptr_t>(x.keep.data_ptr()) % 16 == 0 && x.sb % 16 == 0 &&
           x.st % 16 == 0 && x.sh % 16 == 0 && x.st <= INT32_MAX;
  };
  if (!aligned(o)) {
    Tensor c = torch::stable::new_empty(t, {t.size(0), t.size(1), t.size(2), t.size(3)});
    torch::stable::copy_(c, t);
    o = Operand{c, 0, stride_or_zero(c, 0), stride_or_zero(c, 1), stride_or_zero(c, 2)};
  }
  // Row offsets are 32-bit inside the kernel (batch and head offsets are 64-bit).
  SA_CHECK((t.size(1) + 256) * o.st < INT32_MAX,
                  "sigmoid_attention: one batch entry of a tensor may span at most 2^31 elements "
                  "along T, got T=", t.size(1), " with row stride ", o.st);
  o.ptr = reinterpret_cast<CUdeviceptr>(o.keep.data_ptr());
  return o;
}

// Contiguous float32 (bias, score_mod) or int32 (lengths) view; a no-op for the usual inputs.
Tensor as_dense(const Tensor& t, ScalarType dt) {
  Tensor x = t.scalar_type() == dt ? t : torch::stable::to(t, dt);
  return torch::stable::contiguous(x);
}

using GetStreamFn = AOTITorchError (*)(int32_t, void**);

// aoti_torch_get_current_cuda_stream lives in libtorch_cuda; resolved at first use so that the
// library also loads with a CPU-only torch.
GetStreamFn get_stream_fn() {
  static const GetStreamFn fn = [] {
    void* h = dlopen("libtorch_cuda.so", RTLD_NOW | RTLD_NOLOAD);
    void* sym = h ? dlsym(h, "aoti_torch_get_current_cuda_stream") : nullptr;
    if (sym == nullptr) sym = dlsym(RTLD_DEFAULT, "aoti_torch_get_current_cuda_stream");
    SA_CHECK(sym != nullptr,
                    "sigmoid_attn: this torch has no CUDA support (aoti_torch_get_current_cuda_"
                    "stream not found)");
    return reinterpret_cast<GetStreamFn>(sym);
  }();
  return fn;
}

CUstream current_stream(int device) {
  void* s = nullptr;
  SA_CHECK(get_stream_fn()(device, &s) == AOTI_TORCH_SUCCESS,
                  "sigmoid_attn: cannot read the current CUDA stream of cuda:", device);
  return static_cast<CUstream>(s);
}

CUdeviceptr ptr_of(const std::optional<Tensor>& t) {
  return t.has_value() ? reinterpret_cast<CUdeviceptr>(t->data_ptr()) : 0;
}

}  // namespace

Tensor forward_cuda(SIGMOID_ATTN_FORWARD_ARGS) {
  const ForwardProblem p = check_forward(
      {q, k, v, seq_lens_q, seq_lens_k, is_causal, scale, sigmoid_bias, sigmoid_bias_tensor,
       score_mod},
      Backend::kCUDA);
  const bool has_mod = score_mod.has_value();
  const int kernel = select_forward_kernel(q.scalar_type(), p.D, is_causal, has_mod);
  const KernelSpec& spec = kKernels[kernel];

  Tensor out = torch::stable::new_empty(q, {p.B, p.Tq, p.Hq, p.D});
  if (p.B == 0 || p.Tq == 0 || p.Hq == 0) return out;

  const int device = q.get_device_index();
  Operand oq = operand(q), ok = operand(k), ov = operand(v);
  std::optional<Tensor> lq, lk, bias, mod;
  if (seq_lens_q.has_value()) lq = as_dense(*seq_lens_q, ScalarType::Int);
  if (seq_lens_k.has_value()) lk = as_dense(*seq_lens_k, ScalarType::Int);
  if (p.bias_mode == kBiasTensor) bias = as_dense(*sigmoid_bias_tensor, ScalarType::Float);
  int64_t smb = 0, smt = 0;
  if (has_mod) {
    mod = score_mod->scalar_type() == ScalarType::Float
              ? *score_mod
              : torch::stable::to(*score_mod, ScalarType::Float);
    smb = stride_or_zero(*mod, 0);
    smt = stride_or_zero(*mod, 1);
    SA_CHECK(smt <= INT32_MAX, "sigmoid_attention: score_mod stride(1) must fit int32, got ",
                    smt);
  }

  // Parameters in variants.FWD_PARAMS order; the PTX check in aot.py guards the sizes.
  CUdeviceptr a_q = oq.ptr, a_k = ok.ptr, a_v = ov.ptr,
              a_o = reinterpret_cast<CUdeviceptr>(out.data_ptr());
  CUdeviceptr a_lq = ptr_of(lq), a_lk = ptr_of(lk), a_bias = ptr_of(bias), a_mod = ptr_of(mod);
  int64_t qb = oq.sb, qh = oq.sh, kb = ok.sb, kh = ok.sh, vb = ov.sb, vh = ov.sh;
  int32_t qt = static_cast<int32_t>(oq.st), kt = static_cast<int32_t>(ok.st),
          vt = static_cast<int32_t>(ov.st);
  int64_t ob = out.stride(0), oh = out.stride(2);
  int32_t ot = static_cast<int32_t>(out.stride(1));
  int64_t a_smb = smb;
  int32_t a_smt = static_cast<int32_t>(smt);
  int32_t t_q = static_cast<int32_t>(p.Tq), t_k = static_cast<int32_t>(p.Tk),
          kv_group = static_cast<int32_t>(p.Hq / p.Hkv);
  float a_scale = p.scale, a_bias_value = p.bias_value;
  int32_t has_lq = lq.has_value(), has_lk = lk.has_value(), bias_mode = p.bias_mode;
  void* args[] = {&a_q,  &a_k,    &a_v,   &a_o,   &a_lq,  &a_lk,   &a_bias,       &a_mod,
                  &qb,   &qt,     &qh,    &kb,    &kt,    &kh,     &vb,           &vt,
                  &vh,   &ob,     &ot,    &oh,    &a_smb, &a_smt,  &t_q,          &t_k,
                  &kv_group, &a_scale, &a_bias_value, &has_lq, &has_lk, &bias_mode};
  static_assert(sizeof(args) / sizeof(args[0]) == 30, "FWD_PARAMS has 30 entries");
  SA_CHECK(spec.num_params == 30, "sigmoid_attn: kernel ", spec.name, " has ",
                  spec.num_params, " parameters, the launcher packs 30");

  const unsigned grid_m = static_cast<unsigned>((p.Tq + spec.block_m - 1) / spec.block_m);
  launch_kernel(kernel, device, current_stream(device), grid_m, static_cast<unsigned>(p.Hq),
                static_cast<unsigned>(p.B), args);
  return out;
}

}  // namespace sigmoid_attn
