#include "runtime/memory_peak.h"

#include <fstream>
#include <string>

#include "qforge_version_config.h"

#if QFORGE_HAVE_NCCL  // LibTorch with CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#endif

namespace qforge {

int64_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  return 0;
}

void reset_peak_memory(const c10::Device& device) {
#if QFORGE_HAVE_NCCL
  if (device.is_cuda()) {
    // Before the first CUDA tensor LibTorch's allocator has no devices yet
    // ("Invalid device argument"): nothing was allocated, nothing to reset.
    try {
      c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
    } catch (const c10::Error&) {
    }
    return;
  }
#endif
  // "5" resets the peak resident set to the current one (Linux 4.0 and later);
  // where it cannot, the peak stays the process's so far.
  std::ofstream("/proc/self/clear_refs") << "5";
}

int64_t peak_memory_bytes(const c10::Device& device) {
#if QFORGE_HAVE_NCCL
  if (device.is_cuda()) {
    // allocated_bytes[0]: every pool together (StatType::AGGREGATE).
    try {
      return c10::cuda::CUDACachingAllocator::getDeviceStats(device.index()).allocated_bytes[0].peak;
    } catch (const c10::Error&) {  // no CUDA tensor yet
      return 0;
    }
  }
#endif
  (void)device;
  return peak_rss_bytes();
}

int64_t free_device_bytes(const c10::Device& device) {
#if QFORGE_HAVE_NCCL
  if (device.is_cuda()) {
    const c10::cuda::CUDAGuard guard(device);
    size_t free = 0, total = 0;
    if (cudaMemGetInfo(&free, &total) != cudaSuccess) return 0;
    try {
      const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
      return static_cast<int64_t>(free) + stats.reserved_bytes[0].current - stats.allocated_bytes[0].current;
    } catch (const c10::Error&) {  // no CUDA tensor yet: the driver's figure is all there is
      return static_cast<int64_t>(free);
    }
  }
#endif
  (void)device;
  return -1;
}

}  // namespace qforge
