// Runs an AOTInductor package (.pt2, from torch.export + aoti_compile_and_package) whose
// compiled graph calls torch.ops.sigmoid_attn.forward, and compares with Python's output.
//
//   run_aoti <model.pt2> <io.pt> <libsigmoid_attn_ops.so>
#include <dlfcn.h>

#include <cstdio>

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s model.pt2 io.pt libsigmoid_attn_ops.so\n", argv[0]);
    return 2;
  }
  if (dlopen(argv[3], RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    std::fprintf(stderr, "cannot load %s: %s\n", argv[3], dlerror());
    return 2;
  }
  torch::jit::Module io = torch::jit::load(argv[2]);
  const at::Tensor x = io.attr("x").toTensor();
  const at::Tensor lens = io.attr("seq_lens").toTensor();
  const at::Tensor expected = io.attr("expected").toTensor();
  c10::InferenceMode guard;
  torch::inductor::AOTIModelPackageLoader loader(argv[1]);
  const std::vector<at::Tensor> outs = loader.run({x, lens});
  const double err = (outs.at(0).to(at::kDouble) - expected.to(at::kDouble)).norm().item<double>() /
                     expected.to(at::kDouble).norm().item<double>();
  const double tol = x.scalar_type() == at::kFloat ? 1e-5 : 2e-2;
  std::printf("AOTInductor package on %s: C++ output vs Python: rel err %.3e -> %s\n",
              x.device().str().c_str(), err, err <= tol ? "MATCH" : "MISMATCH");
  return err <= tol ? 0 : 1;
}
