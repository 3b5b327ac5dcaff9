// Lazy, thread-safe module loading per (device, kernel) and the driver-API launch.
#pragma once

#include <cuda.h>

#include "kernel_args.h"
#include "kernel_spec.h"

namespace sigmoid_attn {

// Launches kKernels[kernel], a kernel of `kind`, on the given CUDA device and stream. `args` is
// the packed argument struct (kernel_args.h): num_params pointers to the kernel's own parameters,
// then num_hidden to the hidden ones this Triton version appends, which are filled here. No
// host synchronization.
void launch_kernel(int kernel, KernelKind kind, int num_params, int num_hidden, int device,
                   CUstream stream, unsigned grid_x, unsigned grid_y, unsigned grid_z,
                   void** args);

// Launches kKernels[kernel] with an argument struct of its kind (kernel_args.h).
template <typename Args>
void launch(int kernel, int device, CUstream stream, unsigned grid_x, unsigned grid_y,
            unsigned grid_z, Args& args) {
  auto params = args.pack();
  launch_kernel(kernel, Args::kKind, Args::kNumParams, Args::kNumHidden, device, stream, grid_x,
                grid_y, grid_z, params.data());
}

// Makes the device's primary context current in the calling thread for the scope's life where
// another one (or none) is: the driver calls that take no stream (cuTensorMapEncodeTiled,
// cuMemsetD32Async's context check) refuse to run without one (CUDA_ERROR_INVALID_CONTEXT), and
// a thread torch starts, such as autograd's device thread, need not have one.
class DeviceContext {
 public:
  explicit DeviceContext(int device);
  ~DeviceContext();
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;

 private:
  bool pushed_ = false;
};

// Sets n 32-bit words at ptr to value on the stream, in the device's primary context (as
// launch_kernel). No host synchronization.
void memset_d32(int device, CUstream stream, CUdeviceptr ptr, unsigned value, size_t n);

// The device's multiprocessor count (read once per device).
int sm_count(int device);

}  // namespace sigmoid_attn
