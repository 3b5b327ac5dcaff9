#include "cuda_driver.h"

#include <dlfcn.h>

#include <string>

#include "check.h"

namespace sigmoid_attn {

namespace {

template <typename F>
void resolve(void* lib, const char* name, F& fn) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  if (fn == nullptr) {  // an unusable driver: let it go (the next call tries again)
    dlclose(lib);
    SA_CHECK(false, "sigmoid_attn: CUDA driver has no symbol ", name);
  }
}

CudaDriver load_driver() {
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  SA_CHECK(lib != nullptr,
                  "sigmoid_attn: cannot load the CUDA driver (libcuda.so.1): ", dlerror());
  CudaDriver d{};
  resolve(lib, "cuModuleUnload", d.cuModuleUnload);
  resolve(lib, "cuGetErrorString", d.cuGetErrorString);
  resolve(lib, "cuDeviceGet", d.cuDeviceGet);
  resolve(lib, "cuDeviceGetAttribute", d.cuDeviceGetAttribute);
  resolve(lib, "cuDevicePrimaryCtxRetain", d.cuDevicePrimaryCtxRetain);
  resolve(lib, "cuCtxGetCurrent", d.cuCtxGetCurrent);
  resolve(lib, "cuCtxPushCurrent_v2", d.cuCtxPushCurrent);
  resolve(lib, "cuCtxPopCurrent_v2", d.cuCtxPopCurrent);
  resolve(lib, "cuModuleLoadData", d.cuModuleLoadData);
  resolve(lib, "cuModuleGetFunction", d.cuModuleGetFunction);
  resolve(lib, "cuFuncSetAttribute", d.cuFuncSetAttribute);
  resolve(lib, "cuLaunchKernel", d.cuLaunchKernel);
  resolve(lib, "cuMemsetD32Async", d.cuMemsetD32Async);
  d.cuTensorMapEncodeTiled =
      reinterpret_cast<decltype(d.cuTensorMapEncodeTiled)>(dlsym(lib, "cuTensorMapEncodeTiled"));
  return d;  // the handle stays open for the life of the process
}

}  // namespace

const CudaDriver& cuda_driver() {
  static const CudaDriver driver = load_driver();
  return driver;
}

void check_cu(CUresult r, const char* what) {
  if (r == CUDA_SUCCESS) return;
  const char* msg = nullptr;
  if (cuda_driver().cuGetErrorString(r, &msg) != CUDA_SUCCESS || msg == nullptr) {
    msg = "unknown error";
  }
  SA_CHECK(false, "sigmoid_attn: ", what, " failed: ", msg, " (CUresult ",
                  static_cast<int>(r), ")");
}

}  // namespace sigmoid_attn
