// sigmoid_attn._C: build facts and the compiled-kernel catalog. A separate, small binding; the
// ops library itself stays free of Python so that one binary serves every CPython and C++.
//
// _C does not link the ops library: it resolves the library's C entry points with dlsym after
// Python has loaded it (bind()). A link-time dependency tied the two binaries together, so an
// ops library built elsewhere (another compiler, another torch) could not be dropped in beside a
// locally built _C; on the GPU machine that failed with an unresolved libstdc++ symbol.
#include <dlfcn.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

namespace py = pybind11;

namespace {

struct OpsApi {
  const char* (*version)() = nullptr;
  const char* (*torch_build_version)() = nullptr;
  const char* (*triton_build_version)() = nullptr;
  int (*cuda_header_version)() = nullptr;
  int (*compiled_arch)() = nullptr;
  int (*num_kernels)() = nullptr;
  const char* (*kernel_name)(int) = nullptr;
  int (*kernel_field)(int, const char*) = nullptr;
  const char* (*kernel_label)(int, const char*) = nullptr;
  int (*warp_specialized)(int) = nullptr;  // the dispatch switches: set 1/0, < 0 reads
  int (*atomic_dq)(int) = nullptr;
  int (*gluon_forward)(int) = nullptr;
  int (*gluon_backward)(int) = nullptr;
} api;

template <typename F>
void resolve(void* lib, const char* name, F& fn) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  if (fn == nullptr) throw std::runtime_error(std::string("sigmoid_attn._C: missing ") + name);
}

void bind(const std::string& path) {
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (lib == nullptr) lib = dlopen(path.c_str(), RTLD_NOW);
  if (lib == nullptr) throw std::runtime_error("sigmoid_attn._C: cannot open " + path);
  resolve(lib, "sigmoid_attn_version", api.version);
  resolve(lib, "sigmoid_attn_torch_build_version", api.torch_build_version);
  resolve(lib, "sigmoid_attn_triton_build_version", api.triton_build_version);
  resolve(lib, "sigmoid_attn_cuda_header_version", api.cuda_header_version);
  resolve(lib, "sigmoid_attn_compiled_arch", api.compiled_arch);
  resolve(lib, "sigmoid_attn_num_kernels", api.num_kernels);
  resolve(lib, "sigmoid_attn_kernel_name", api.kernel_name);
  resolve(lib, "sigmoid_attn_kernel_field", api.kernel_field);
  resolve(lib, "sigmoid_attn_kernel_label", api.kernel_label);
  resolve(lib, "sigmoid_attn_warp_specialized", api.warp_specialized);
  resolve(lib, "sigmoid_attn_atomic_dq", api.atomic_dq);
  resolve(lib, "sigmoid_attn_gluon_forward", api.gluon_forward);
  resolve(lib, "sigmoid_attn_gluon_backward", api.gluon_backward);
}

const OpsApi& bound() {
  if (api.version == nullptr) throw std::runtime_error("sigmoid_attn._C: bind() first");
  return api;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "sigmoid_attn build information and kernel catalog";
  m.def("bind", &bind, "Resolve the ops library's C entry points (path of the loaded library)");
  m.def("build_info", [] {
    const OpsApi& a = bound();
    py::dict d;
    d["version"] = a.version();
    d["torch"] = a.torch_build_version();
    d["triton"] = a.triton_build_version();
    const int cuda = a.cuda_header_version();
    d["cuda"] = std::to_string(cuda / 1000) + "." + std::to_string(cuda % 1000 / 10);
    d["arch"] = "sm_" + std::to_string(a.compiled_arch());
    return d;
  });
  m.def(
      "dispatch_switch",
      [](const std::string& name, int set) {
        const OpsApi& a = bound();
        if (name == "warp_specialized") return a.warp_specialized(set);
        if (name == "one_pass_backward") return a.atomic_dq(set);
        if (name == "gluon_forward") return a.gluon_forward(set);
        if (name == "gluon_backward") return a.gluon_backward(set);
        throw std::invalid_argument("sigmoid_attn._C.dispatch_switch: unknown switch '" + name +
                                    "', expected 'warp_specialized', 'gluon_forward', "
                                    "'gluon_backward' or 'one_pass_backward'");
      },
      "Sets a process-wide dispatch switch (1/0; < 0 only reads); returns the setting before");
  m.def("kernel_catalog", [] {
    const OpsApi& a = bound();
    static const char* const ints[] = {"head_dim", "block_m", "block_n", "num_warps",
                                       "num_stages", "min_t", "shared_bytes",
                                       "num_hidden_params", "cubin_bytes", "stride_multiple"};
    py::list out;
    for (int i = 0; i < a.num_kernels(); ++i) {
      py::dict k;
      k["name"] = a.kernel_name(i);
      k["kind"] = a.kernel_label(i, "kind");  // (names from variants.py, as the library has them)
      k["dtype"] = a.kernel_label(i, "dtype");
      k["causal"] = static_cast<bool>(a.kernel_field(i, "causal"));
      k["score_mod"] = static_cast<bool>(a.kernel_field(i, "score_mod"));
      k["varlen"] = static_cast<bool>(a.kernel_field(i, "varlen"));
      // generic: head_dim is its BLOCK_D, serving the multiples of 8 up to it without kernels
      k["runtime_head_dim"] = static_cast<bool>(a.kernel_field(i, "runtime_head_dim"));
      for (const char* f : ints) k[f] = a.kernel_field(i, f);
      out.append(k);
    }
    return out;
  });
}
