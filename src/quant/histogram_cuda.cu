#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <string>

#include "qforge/errors.h"
#include "quant/histogram_cuda.h"

namespace qforge {
namespace {

constexpr int kThreads = 512;
constexpr int kBlocksPerMultiprocessor = 4;
// Shared-memory counts are 32-bit: one launch counts at most this many values.
constexpr int64_t kValuesPerLaunch = int64_t{1} << 31;

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw Error(std::string("histogram on the GPU: ") + what + ": " + cudaGetErrorString(status));
}

struct DeviceLimits {
  int multiprocessors = 0, shared_bytes = 0;
};

// Asked of the runtime once per device, not per observation.
DeviceLimits limits_of(int device) {
  static std::mutex mutex;
  static std::map<int, DeviceLimits> known;
  const std::lock_guard<std::mutex> lock(mutex);
  auto it = known.find(device);
  if (it != known.end()) return it->second;
  DeviceLimits limits;
  check(cudaDeviceGetAttribute(&limits.multiprocessors, cudaDevAttrMultiProcessorCount, device),
        "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&limits.shared_bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
        "cudaDeviceGetAttribute");
  return known.emplace(device, limits).first->second;
}

// One block: the new exponent from the batch's range, then each bin's count
// moved to bin floor(k / 2^shift) through `scratch`.
__global__ void widen_grid_kernel(const float* batch_range, int log2_half, int offset, int bins, int* exponent,
                                  unsigned long long* counts, unsigned long long* scratch) {
  __shared__ int old_exponent, new_exponent;
  if (threadIdx.x == 0) {
    old_exponent = new_exponent = *exponent;
    const float lo = batch_range[0], hi = batch_range[1];
    if (isfinite(lo) && isfinite(hi)) {
      const float amax = fmaxf(fabsf(lo), fabsf(hi));
      int p = 0;
      if (amax > 0) frexpf(amax, &p);
      new_exponent = max(old_exponent, amax > 0 ? grid_exponent_for(p, log2_half) : kLowestGridExponent);
    }
  }
  __syncthreads();
  if (new_exponent == old_exponent) return;
  if (old_exponent != kNoGrid) {
    const int shift = min(new_exponent - old_exponent, 62);
    for (int i = threadIdx.x; i < bins; i += blockDim.x) {
      scratch[i] = counts[i];
      counts[i] = 0;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < bins; i += blockDim.x)
      if (scratch[i] != 0) atomicAdd(&counts[floor_shift(i - offset, shift) + offset], scratch[i]);
  }
  if (threadIdx.x == 0) *exponent = new_exponent;
}

struct Binning {
  float per_unit;     // 2^-e
  float first, last;  // the window's lowest and highest bin numbers
  int offset;
  bool absolute;
};

// No fused multiply-add (the _rn intrinsic): the CPU rounds the product on its own.
__device__ __forceinline__ void count_value(unsigned* block_counts, float v, const Binning& b) {
  const float t = b.absolute ? fabsf(v) : v;
  const float bin = fminf(fmaxf(floorf(__fmul_rn(t, b.per_unit)), b.first), b.last);
  atomicAdd(&block_counts[static_cast<int>(bin) + b.offset], 1u);
}

// Each block counts into shared memory (the hardware resolves colliding
// shared atomics quickly, so the hot bins of post-ReLU zeros cost little),
// then adds its counts to the global int64 ones. `head` values come first
// one by one so that the rest loads as aligned float4.
__global__ void count_on_grid_kernel(const float* __restrict__ x, int64_t n, int64_t head, const int* exponent,
                                     int offset, int bins, bool absolute, unsigned long long* counts) {
  extern __shared__ unsigned block_counts[];
  const int e = *exponent;
  if (e == kNoGrid) return;  // no finite batch yet: nothing is chosen from these counts
  Binning binning;
  binning.per_unit = __int_as_float((127 - e) << 23);  // 2^-e, a normal float for every grid exponent
  binning.first = static_cast<float>(-offset);
  binning.last = static_cast<float>(bins - 1 - offset);
  binning.offset = offset;
  binning.absolute = absolute;
  for (int i = threadIdx.x; i < bins; i += blockDim.x) block_counts[i] = 0;
  __syncthreads();
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  if (first < head) count_value(block_counts, x[first], binning);
  const int64_t vectors = (n - head) / 4;
  const float4* body = reinterpret_cast<const float4*>(x + head);
  for (int64_t i = first; i < vectors; i += stride) {
    const float4 v = body[i];
    count_value(block_counts, v.x, binning);
    count_value(block_counts, v.y, binning);
    count_value(block_counts, v.z, binning);
    count_value(block_counts, v.w, binning);
  }
  for (int64_t i = head + vectors * 4 + first; i < n; i += stride) count_value(block_counts, x[i], binning);
  __syncthreads();
  for (int i = threadIdx.x; i < bins; i += blockDim.x)
    if (block_counts[i] != 0) atomicAdd(&counts[i], static_cast<unsigned long long>(block_counts[i]));
}

int current_device() {
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  return device;
}

}  // namespace

bool histogram_kernel_fits(int64_t bins, int device) {
  return bins * static_cast<int64_t>(sizeof(unsigned)) <= limits_of(device).shared_bytes;
}

void widen_grid_cuda(const float* batch_range, const GridShape& shape, int32_t* exponent, int64_t* counts,
                     int64_t* scratch, void* stream) {
  widen_grid_kernel<<<1, 1024, 0, static_cast<cudaStream_t>(stream)>>>(
      batch_range, shape.log2_half, static_cast<int>(shape.offset()), static_cast<int>(shape.bins()), exponent,
      reinterpret_cast<unsigned long long*>(counts), reinterpret_cast<unsigned long long*>(scratch));
  check(cudaGetLastError(), "kernel launch");
}

void count_on_grid_cuda(const float* x, int64_t n, const GridShape& shape, const int32_t* exponent, int64_t* counts,
                        void* stream) {
  const DeviceLimits limits = limits_of(current_device());
  const size_t shared = static_cast<size_t>(shape.bins()) * sizeof(unsigned);
  if (shared > 48 * 1024)
    check(cudaFuncSetAttribute(count_on_grid_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(shared)),
          "more shared memory for the bins");
  for (int64_t begin = 0; begin < n; begin += kValuesPerLaunch) {
    const int64_t count = std::min(kValuesPerLaunch, n - begin);
    const float* part = x + begin;
    const int64_t misaligned = (reinterpret_cast<uintptr_t>(part) % 16) / sizeof(float);
    const int64_t head = std::min<int64_t>(count, misaligned == 0 ? 0 : 4 - misaligned);
    const int64_t wanted = ((count - head) / 4 + kThreads - 1) / kThreads;
    const int blocks =
        static_cast<int>(std::clamp<int64_t>(wanted, 1, int64_t{limits.multiprocessors} * kBlocksPerMultiprocessor));
    count_on_grid_kernel<<<blocks, kThreads, shared, static_cast<cudaStream_t>(stream)>>>(
        part, count, head, exponent, static_cast<int>(shape.offset()), static_cast<int>(shape.bins()), shape.symmetric,
        reinterpret_cast<unsigned long long*>(counts));
    check(cudaGetLastError(), "kernel launch");
  }
}

}  // namespace qforge
