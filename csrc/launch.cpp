#include "launch.h"

#include <array>
#include <atomic>
#include <memory>
#include <mutex>

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include "check.h"

#include "cuda_driver.h"
#include "kernel_spec.h"

namespace sigmoid_attn {

namespace {

constexpr int kMaxDevices = 64;

struct DeviceModules {
  CUcontext ctx = nullptr;
  int sm_count = 0;
  std::unique_ptr<std::atomic<CUfunction>[]> fn;
  DeviceModules() : fn(new std::atomic<CUfunction>[kNumKernels]) {
    for (int i = 0; i < kNumKernels; ++i) fn[i].store(nullptr, std::memory_order_relaxed);
  }
};

std::array<std::atomic<DeviceModules*>, kMaxDevices> g_devices{};
std::mutex g_load_mutex;

// Only the variant used is loaded: a process that calls one kernel loads one cubin.
CUfunction load_function(int kernel, int device, DeviceModules* dm) {
  const CudaDriver& cu = cuda_driver();
  const KernelSpec& spec = kKernels[kernel];
  check_cu(cu.cuCtxPushCurrent(dm->ctx), "cuCtxPushCurrent");
  CUmodule mod = nullptr;
  CUfunction fn = nullptr;
  CUresult r = cu.cuModuleLoadData(&mod, spec.image);
  if (r == CUDA_SUCCESS) r = cu.cuModuleGetFunction(&fn, mod, spec.entry);
  // Triton asks for dynamic shared memory beyond the 48 KiB default; opt in per function.
  if (r == CUDA_SUCCESS && spec.shared_bytes > 48 * 1024) {
    r = cu.cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                              spec.shared_bytes);
  }
  if (r != CUDA_SUCCESS && mod != nullptr) cu.cuModuleUnload(mod);  // no half-loaded kernel
  CUcontext popped = nullptr;
  cu.cuCtxPopCurrent(&popped);
  if (r != CUDA_SUCCESS) {
    const char* msg = nullptr;
    cu.cuGetErrorString(r, &msg);
    SA_CHECK(false, "sigmoid_attn: loading kernel ", spec.name, " on cuda:", device,
                    " failed: ", msg ? msg : "unknown error",
                    " (kernels are compiled for sm_", kCompiledArch, ")");
  }
  return fn;  // modules stay loaded for the life of the process
}

DeviceModules* device_modules(int device) {
  DeviceModules* dm = g_devices[device].load(std::memory_order_acquire);
  if (dm != nullptr) return dm;
  std::lock_guard<std::mutex> lock(g_load_mutex);
  dm = g_devices[device].load(std::memory_order_relaxed);
  if (dm == nullptr) {
    const CudaDriver& cu = cuda_driver();
    CUdevice dev;
    check_cu(cu.cuDeviceGet(&dev, device), "cuDeviceGet");
    auto fresh = std::make_unique<DeviceModules>();
    // torch's runtime API works in each device's primary context; so do we.
    check_cu(cu.cuDevicePrimaryCtxRetain(&fresh->ctx, dev), "cuDevicePrimaryCtxRetain");
    check_cu(cu.cuDeviceGetAttribute(&fresh->sm_count, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
                                     dev),
             "cuDeviceGetAttribute");
    dm = fresh.release();
    g_devices[device].store(dm, std::memory_order_release);
  }
  return dm;
}

}  // namespace

int sm_count(int device) {
  SA_CHECK(device >= 0 && device < kMaxDevices, "sigmoid_attn: CUDA device index ", device,
           " out of range [0, ", kMaxDevices, ")");
  return device_modules(device)->sm_count;
}

DeviceContext::DeviceContext(int device) {
  SA_CHECK(device >= 0 && device < kMaxDevices, "sigmoid_attn: CUDA device index ", device,
           " out of range [0, ", kMaxDevices, ")");
  DeviceModules* dm = device_modules(device);
  const CudaDriver& cu = cuda_driver();
  CUcontext current = nullptr;
  cu.cuCtxGetCurrent(&current);
  if (current != dm->ctx) {
    check_cu(cu.cuCtxPushCurrent(dm->ctx), "cuCtxPushCurrent");
    pushed_ = true;
  }
}

DeviceContext::~DeviceContext() {
  if (pushed_) {
    CUcontext popped = nullptr;
    cuda_driver().cuCtxPopCurrent(&popped);
  }
}

void memset_d32(int device, CUstream stream, CUdeviceptr ptr, unsigned value, size_t n) {
  const DeviceContext ctx(device);
  check_cu(cuda_driver().cuMemsetD32Async(ptr, value, n, stream), "cuMemsetD32Async");
}

void launch_kernel(int kernel, KernelKind kind, int num_params, int num_hidden, int device,
                   CUstream stream, unsigned grid_x, unsigned grid_y, unsigned grid_z,
                   void** args) {
  SA_CHECK(device >= 0 && device < kMaxDevices, "sigmoid_attn: CUDA device index ",
                  device, " out of range [0, ", kMaxDevices, ")");
  const KernelSpec& spec = kKernels[kernel];
  // The argument struct is the selected kernel's: same kind, same parameter counts (one build
  // generated both, so only a dispatch slip fails here).
  SA_CHECK(spec.kind == kind && spec.num_params == num_params &&
               spec.num_hidden_params == num_hidden,
           "sigmoid_attn: kernel ", spec.name, " (kind ", kKindNames[static_cast<int>(spec.kind)],
           ", ", spec.num_params, " + ", spec.num_hidden_params,
           " parameters) launched with the arguments of kind ",
           kKindNames[static_cast<int>(kind)], " (", num_params, " + ", num_hidden, ")");
  DeviceModules* dm = device_modules(device);
  CUfunction fn = dm->fn[kernel].load(std::memory_order_acquire);
  if (fn == nullptr) {
    std::lock_guard<std::mutex> lock(g_load_mutex);
    fn = dm->fn[kernel].load(std::memory_order_relaxed);
    if (fn == nullptr) {
      fn = load_function(kernel, device, dm);
      dm->fn[kernel].store(fn, std::memory_order_release);
    }
  }

  // Hidden parameters (global / profile scratch in Triton 3.6-3.8): null unless the compiled
  // metadata asks for scratch, which is then taken from torch's caching allocator. They are
  // the struct's last fields, written through the packed pointers.
  std::optional<torch::stable::Tensor> scratch[2];
  const int sizes[2] = {spec.global_scratch_size, spec.profile_scratch_size};
  const int aligns[2] = {spec.global_scratch_align, spec.profile_scratch_align};
  const uint64_t programs = uint64_t(grid_x) * grid_y * grid_z;
  for (int h = 0; h < num_hidden; ++h) {
    CUdeviceptr& slot = *static_cast<CUdeviceptr*>(args[num_params + h]);
    slot = 0;
    if (h < 2 && sizes[h] > 0) {
      const int64_t align = aligns[h] > 0 ? aligns[h] : 1;
      const int64_t bytes = static_cast<int64_t>(programs) * sizes[h] + align;
      scratch[h] = torch::stable::empty({bytes}, torch::headeronly::ScalarType::Byte,
                                        std::nullopt,
                                        torch::stable::Device(torch::headeronly::DeviceType::CUDA,
                                                              static_cast<int8_t>(device)));
      auto p = reinterpret_cast<uintptr_t>(scratch[h]->data_ptr());
      slot = (p + align - 1) / align * align;
    }
  }

  const CudaDriver& cu = cuda_driver();
  CUcontext current = nullptr;
  cu.cuCtxGetCurrent(&current);
  const bool switch_ctx = current != dm->ctx;
  if (switch_ctx) check_cu(cu.cuCtxPushCurrent(dm->ctx), "cuCtxPushCurrent");
  CUresult r = cu.cuLaunchKernel(fn, grid_x, grid_y, grid_z, 32 * spec.num_warps, 1, 1,
                                 spec.shared_bytes, stream, args, nullptr);
  if (switch_ctx) {
    CUcontext popped = nullptr;
    cu.cuCtxPopCurrent(&popped);
  }
  check_cu(r, spec.name);
}

}  // namespace sigmoid_attn
