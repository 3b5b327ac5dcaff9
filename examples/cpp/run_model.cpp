// Loads a TorchScript model that calls torch.ops.sigmoid_attn.forward, runs it without Python,
// compares with Python's output, then checks the direct C++ API against the dispatcher op.
// (Host cost per call: bench_host_cost.cpp.)
//
//   run_model <model.pt> <io.pt>
//
// Linked against libsigmoid_attn_ops.so: loading it registers torch.ops.sigmoid_attn.* (what the
// TorchScript model calls) and provides the direct API. (run_aoti dlopen()s it instead.)
#include <cstdio>
#include <limits>
#include <optional>

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/script.h>

#include <sigmoid_attn/sigmoid_attn.h>

#include "forward_op.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s model.pt io.pt\n", argv[0]);
    return 2;
  }
  torch::jit::Module model = torch::jit::load(argv[1]);
  torch::jit::Module io = torch::jit::load(argv[2]);
  const at::Tensor x = io.attr("x").toTensor();
  const at::Tensor lens = io.attr("seq_lens").toTensor();
  const at::Tensor expected = io.attr("expected").toTensor();

  c10::InferenceMode guard;
  const at::Tensor out = model.forward({x, lens}).toTensor();
  const double err = (out.to(at::kDouble) - expected.to(at::kDouble)).norm().item<double>() /
                     expected.to(at::kDouble).norm().item<double>();
  const double tol = x.scalar_type() == at::kFloat ? 1e-5 : 1e-2;
  std::printf("device %s, dtype %s: C++ output vs Python: rel err %.3e -> %s\n",
              x.device().str().c_str(), c10::toString(x.scalar_type()), err,
              err <= tol ? "MATCH" : "MISMATCH");
  if (!(err <= tol)) return 1;

  // The same op two ways: through the dispatcher (what TorchScript calls) and through the
  // direct C++ API (sigmoid_attn/sigmoid_attn.h), on random [B, T, H, D] inputs with lengths.
  auto op = sigmoid_attn_forward_op();
  const auto opts = x.options();
  const at::Tensor q = at::randn({2, 37, 4, 64}, opts), k = at::randn({2, 45, 2, 64}, opts),
                   v = at::randn({2, 45, 2, 64}, opts);
  const at::Tensor lq = at::tensor({37, 20}, opts.dtype(at::kInt)),
                   lk = at::tensor({45, 9}, opts.dtype(at::kInt));
  const at::Tensor via_op = op.call(q, k, v, lq, lk, true, 0.2, -1.5, std::nullopt, std::nullopt);
  const at::Tensor direct = sigmoid_attn::forward(
      q, k, v, {.seq_lens_q = lq, .seq_lens_k = lk, .is_causal = true, .scale = 0.2,
                .sigmoid_bias = -1.5});
  const bool same = direct.sizes() == via_op.sizes() && at::equal(direct, via_op);
  std::printf("direct C++ API (sigmoid_attn::forward) vs the dispatcher op on %s: %s\n",
              x.device().str().c_str(), same ? "bitwise MATCH" : "MISMATCH");
  if (!same) return 1;
  // Into a reused buffer (poisoned first: every element must be written).
  at::Tensor buffer = at::full_like(via_op, std::numeric_limits<float>::quiet_NaN());
  sigmoid_attn::forward_out(buffer, q, k, v,
                            {.seq_lens_q = lq, .seq_lens_k = lk, .is_causal = true,
                             .scale = 0.2, .sigmoid_bias = -1.5});
  const bool same_out = at::equal(buffer, via_op);
  std::printf("direct C++ API into a buffer (sigmoid_attn::forward_out) on %s: %s\n",
              x.device().str().c_str(), same_out ? "bitwise MATCH" : "MISMATCH");
  if (!same_out) return 1;
  // A lazily negated view (Tensor::is_neg: the memory of q, read as -q) gives -q's output.
  const bool neg_same = at::equal(sigmoid_attn::forward(at::_neg_view(q), k, v),
                                  sigmoid_attn::forward(q.neg(), k, v));
  std::printf("direct C++ API on a negated view (Tensor::is_neg) vs its values on %s: %s\n",
              x.device().str().c_str(), neg_same ? "bitwise MATCH" : "MISMATCH");
  if (!neg_same) return 1;
  // With grad mode on, an input that requires grad is refused: its gradient would be lost.
  {
    c10::InferenceMode not_inference(false);
    at::AutoGradMode grad_on(true);
    const at::Tensor qg = at::randn({2, 37, 4, 64}, opts).requires_grad_(true);
    try {
      sigmoid_attn::forward(qg, k.clone(), v.clone());
      std::printf("direct C++ API accepted an input that requires grad: MISMATCH\n");
      return 1;
    } catch (const c10::Error& e) {
      std::printf("direct C++ API refuses an input that requires grad (c10::Error): %s\n",
                  e.what_without_backtrace());
    }
  }
  // Bad input: a c10::Error naming the argument, as from Python.
  try {
    sigmoid_attn::forward(q, k.narrow(3, 0, 32), v);
    std::printf("direct C++ API accepted a head-dim mismatch: MISMATCH\n");
    return 1;
  } catch (const c10::Error& e) {
    std::printf("direct C++ API rejects bad input as it should (c10::Error): %s\n",
                e.what_without_backtrace());
  }
  return 0;
}
