// sigmoid_attn._C: build facts and the compiled-kernel catalog. A separate, small binding; the
// ops library itself stays free of Python so that one binary serves every CPython and C++.
#include <pybind11/pybind11.h>

#include "build_info.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "sigmoid_attn build information and kernel catalog";
  m.def("build_info", [] {
    py::dict d;
    d["version"] = sigmoid_attn_version();
    d["torch"] = sigmoid_attn_torch_build_version();
    d["triton"] = sigmoid_attn_triton_build_version();
    const int cuda = sigmoid_attn_cuda_header_version();
    d["cuda"] = std::to_string(cuda / 1000) + "." + std::to_string(cuda % 1000 / 10);
    d["arch"] = "sm_" + std::to_string(sigmoid_attn_compiled_arch());
    return d;
  });
  m.def("kernel_catalog", [] {
    static const char* const fields[] = {"head_dim",  "causal",       "score_mod",
                                         "block_m",   "block_n",      "num_warps",
                                         "num_stages", "min_t", "shared_bytes", "num_hidden_params",
                                         "cubin_bytes"};
    py::list out;
    for (int i = 0; i < sigmoid_attn_num_kernels(); ++i) {
      py::dict k;
      k["name"] = sigmoid_attn_kernel_name(i);
      static const char* const kinds[] = {"fwd", "bwd_dkdv", "bwd_dq"};
      k["kind"] = kinds[sigmoid_attn_kernel_field(i, "kind")];
      k["dtype"] = sigmoid_attn_kernel_field(i, "dtype") == 0 ? "float16" : "bfloat16";
      for (const char* f : fields) {
        const int v = sigmoid_attn_kernel_field(i, f);
        if (std::string(f) == "causal" || std::string(f) == "score_mod") {
          k[f] = static_cast<bool>(v);
        } else {
          k[f] = v;
        }
      }
      out.append(k);
    }
    return out;
  });
}
