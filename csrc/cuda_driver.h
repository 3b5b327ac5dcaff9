// The few CUDA driver entry points the launcher needs, resolved from libcuda.so.1 at first use.
// Linking libcuda would make the library unloadable on machines without a GPU driver (CI, CPU
// servers), where the CPU path must still work.
#pragma once

#include <cuda.h>

namespace sigmoid_attn {

struct CudaDriver {
  CUresult (*cuGetErrorString)(CUresult, const char**);
  CUresult (*cuDeviceGet)(CUdevice*, int);
  CUresult (*cuDeviceGetAttribute)(int*, CUdevice_attribute, CUdevice);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext*, CUdevice);
  CUresult (*cuCtxGetCurrent)(CUcontext*);
  CUresult (*cuCtxPushCurrent)(CUcontext);
  CUresult (*cuCtxPopCurrent)(CUcontext*);
  CUresult (*cuModuleLoadData)(CUmodule*, const void*);
  CUresult (*cuModuleGetFunction)(CUfunction*, CUmodule, const char*);
  CUresult (*cuModuleUnload)(CUmodule);
  CUresult (*cuFuncSetAttribute)(CUfunction, CUfunction_attribute, int);
  CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                             unsigned, unsigned, CUstream, void**, void**);
  // Zeroes the Gluon backward's fp32 dQ buffer on the call's stream (capturable in a CUDA graph
  // as a memset node; no allocation, no synchronization).
  CUresult (*cuMemsetD32Async)(CUdeviceptr, unsigned int, size_t, CUstream);
  // Host TMA descriptors (the Gluon kernels). Null with a driver older than CUDA 12.0: those
  // calls then take the other forwards.
  CUresult (*cuTensorMapEncodeTiled)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                     const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                     const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                     CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
};

// Loads libcuda once (thread-safe); throws a clear error when no driver is installed.
const CudaDriver& cuda_driver();

// Throws "sigmoid_attn: <what> failed: <driver message>" unless r == CUDA_SUCCESS.
void check_cu(CUresult r, const char* what);

}  // namespace sigmoid_attn
