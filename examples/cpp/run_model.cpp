// Loads a TorchScript model that calls torch.ops.sigmoid_attn.forward, runs it without Python,
// compares with Python's output, and times the bare op from C++ (host cost per call).
//
//   run_model <model.pt> <io.pt> <libsigmoid_attn_ops.so> [calls]
#include <dlfcn.h>

#include <chrono>
#include <cstdio>
#include <optional>

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/script.h>

#ifdef SIGMOID_ATTN_EXAMPLE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace {

void synchronize(const at::Tensor& t) {
#ifdef SIGMOID_ATTN_EXAMPLE_CUDA
  if (t.is_cuda()) cudaDeviceSynchronize();
#endif
  (void)t;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s model.pt io.pt libsigmoid_attn_ops.so [calls]\n", argv[0]);
    return 2;
  }
  const int calls = argc > 4 ? std::atoi(argv[4]) : 10000;
  // The ops library registers torch.ops.sigmoid_attn.* when loaded; libtorch is already in.
  if (dlopen(argv[3], RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    std::fprintf(stderr, "cannot load %s: %s\n", argv[3], dlerror());
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

  // Host cost of the bare op from C++: a tiny problem, `calls` calls, one sync at the end.
  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("sigmoid_attn::forward", "")
                .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                  const std::optional<at::Tensor>&,
                                  const std::optional<at::Tensor>&, bool, std::optional<double>,
                                  std::optional<double>, const std::optional<at::Tensor>&,
                                  const std::optional<at::Tensor>&)>();
  const auto opts = x.options();
  const at::Tensor q = at::randn({1, 256, 8, 64}, opts);
  auto call = [&] {
    return op.call(q, q, q, std::nullopt, std::nullopt, false, std::nullopt, std::nullopt,
                   std::nullopt, std::nullopt);
  };
  for (int i = 0; i < 100; ++i) call();
  synchronize(q);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < calls; ++i) call();
  synchronize(q);
  const double us = std::chrono::duration<double, std::micro>(
                        std::chrono::steady_clock::now() - t0).count() / calls;
  std::printf("tiny call (B=1, T=256, H=8, D=64) from C++: %.2f us per call over %d calls\n",
              us, calls);
  return 0;
}
