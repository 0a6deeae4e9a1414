// The most memory this rank has held since the last reset: the bytes of its
// tensors on a GPU (LibTorch's caching allocator), or the process's resident
// set on the CPU (Linux's VmHWM, which /proc/self/clear_refs resets).
#pragma once
#include <c10/core/Device.h>

#include <cstdint>

namespace qforge {

void reset_peak_memory(const c10::Device& device);
int64_t peak_memory_bytes(const c10::Device& device);

// What a GPU can still hold: free in the driver plus what LibTorch's cache
// holds unused. -1 on the CPU.
int64_t free_device_bytes(const c10::Device& device);

// The process's peak resident set since start or the last reset, in bytes.
int64_t peak_rss_bytes();

}  // namespace qforge
