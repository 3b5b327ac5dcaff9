// CUDA forward: validate -> pick the compiled variant -> pack arguments -> launch on the
// current stream. No host synchronization: lengths stay on the device, so the call is
// CUDA-graph capturable.
#include <torch/csrc/stable/ops.h>

#include "check.h"
#include "cuda_common.h"
#include "dispatch.h"
#include "kernel_spec.h"
#include "launch.h"
#include "ops.h"

namespace sigmoid_attn {

Tensor forward_cuda(SIGMOID_ATTN_FORWARD_ARGS) {
  const ForwardProblem p = check_forward(
      {q, k, v, seq_lens_q, seq_lens_k, is_causal, scale, sigmoid_bias, sigmoid_bias_tensor,
       score_mod},
      Backend::kCUDA);
  const int kernel = select_kernel(KernelKind::kForward, q.scalar_type(), p.D, is_causal,
                                   score_mod.has_value(), p.Tq);
  const KernelSpec& spec = kKernels[kernel];

  Tensor out = empty_cuda(q, {p.B, p.Tq, p.Hq, p.D});
  if (p.B == 0 || p.Tq == 0 || p.Hq == 0) return out;

  const Operand oq = operand(q), ok = operand(k), ov = operand(v), oo = operand(out);
  Extras e = extras(seq_lens_q, seq_lens_k, sigmoid_bias_tensor, score_mod, p.bias_mode);
  int32_t t_q = static_cast<int32_t>(p.Tq), t_k = static_cast<int32_t>(p.Tk),
          kv_group = static_cast<int32_t>(p.Hq / p.Hkv);
  float a_scale = static_cast<float>(p.scale), a_bias_value = static_cast<float>(p.bias_value);
  int32_t has_lq = e.lens_q.has_value(), has_lk = e.lens_k.has_value(), bias_mode = p.bias_mode;
  CUdeviceptr a_q = oq.ptr, a_k = ok.ptr, a_v = ov.ptr, a_o = oo.ptr;
  int64_t qb = oq.sb, qh = oq.sh, kb = ok.sb, kh = ok.sh, vb = ov.sb, vh = ov.sh, ob = oo.sb,
          oh = oo.sh;
  int32_t qt = oq.st, kt = ok.st, vt = ov.st, ot = oo.st;
  // variants.PARAMS["fwd"] order; aot.py's PTX check guards the sizes.
  void* args[] = {&a_q,      &a_k,        &a_v,      &a_o,      &e.p_lens_q, &e.p_lens_k,
                  &e.p_bias, &e.p_mod,    &qb,       &qt,       &qh,         &kb,
                  &kt,       &kh,         &vb,       &vt,       &vh,         &ob,
                  &ot,       &oh,         &e.mod_sb, &e.mod_st, &t_q,        &t_k,
                  &kv_group, &a_scale,    &a_bias_value, &has_lq, &has_lk,   &bias_mode};
  constexpr int kNumArgs = sizeof(args) / sizeof(args[0]);
  SA_CHECK(spec.num_params == kNumArgs, "sigmoid_attn: kernel ", spec.name, " has ",
           spec.num_params, " parameters, the launcher packs ", kNumArgs);
  launch_kernel(kernel, q.get_device_index(), current_stream(q.get_device_index()),
                cdiv(p.Tq, spec.block_m), static_cast<unsigned>(p.Hq),
                static_cast<unsigned>(p.B), args);
  return out;
}

}  // namespace sigmoid_attn
