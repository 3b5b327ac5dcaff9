// Lazy, thread-safe module loading per (device, kernel) and the driver-API launch.
#pragma once

#include <cuda.h>

namespace sigmoid_attn {

// Launches kKernels[kernel] on the given CUDA device and stream. `args` holds pointers to the
// kernel's own parameters (spec.num_params of them, in variants.PARAMS[kind] order); the hidden
// parameters this Triton version appends are supplied here. No host synchronization.
void launch_kernel(int kernel, int device, CUstream stream, unsigned grid_x, unsigned grid_y,
                   unsigned grid_z, void** args);

// The device's multiprocessor count (read once per device).
int sm_count(int device);

}  // namespace sigmoid_attn
