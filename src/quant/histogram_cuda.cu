#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "qforge/errors.h"
#include "quant/histogram_cuda.h"

namespace qforge {
namespace {

constexpr int kThreads = 512;
constexpr int kBlocksPerMultiprocessor = 4;
// Shared-memory counts are 32-bit: one launch counts at most this many values.
constexpr int64_t kValuesPerLaunch = int64_t{1} << 31;

struct Binning {
  float lo, bins_per_unit, last;
  bool absolute;
};

// No fused multiply-add (the _rn intrinsics): the CPU computes each step
// rounded on its own, and the bins must agree.
__device__ __forceinline__ void count_value(unsigned* block_counts, float v, const Binning& b) {
  const float t = b.absolute ? fabsf(v) : __fsub_rn(v, b.lo);
  const float bin = fminf(fmaxf(floorf(__fmul_rn(t, b.bins_per_unit)), 0.f), b.last);
  atomicAdd(&block_counts[static_cast<int>(bin)], 1u);
}

// Each block counts into shared memory (the hardware resolves colliding
// shared atomics quickly, so the hot bins of post-ReLU zeros cost little),
// then adds its counts to the global int64 ones. `head` values come first
// one by one so that the rest loads as aligned float4.
__global__ void count_bins_kernel(const float* __restrict__ x, int64_t n, int64_t head, Binning binning, int bins,
                                  unsigned long long* counts) {
  extern __shared__ unsigned block_counts[];
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

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw Error(std::string("histogram on the GPU: ") + what + ": " + cudaGetErrorString(status));
}

}  // namespace

bool count_bins_cuda(const float* x, int64_t n, float lo, float bins_per_unit, bool absolute, int64_t bins,
                     int64_t* counts, void* stream) {
  int device = 0, multiprocessors = 0, shared_limit = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&shared_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
        "cudaDeviceGetAttribute");
  const size_t shared = static_cast<size_t>(bins) * sizeof(unsigned);
  if (shared > static_cast<size_t>(shared_limit)) return false;
  if (shared > 48 * 1024)
    check(
        cudaFuncSetAttribute(count_bins_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)),
        "more shared memory for the bins");
  const Binning binning{lo, bins_per_unit, static_cast<float>(bins - 1), absolute};
  for (int64_t begin = 0; begin < n; begin += kValuesPerLaunch) {
    const int64_t count = std::min(kValuesPerLaunch, n - begin);
    const float* part = x + begin;
    const int64_t misaligned = (reinterpret_cast<uintptr_t>(part) % 16) / sizeof(float);
    const int64_t head = std::min<int64_t>(count, misaligned == 0 ? 0 : 4 - misaligned);
    const int64_t wanted = ((count - head) / 4 + kThreads - 1) / kThreads;
    const int blocks =
        static_cast<int>(std::clamp<int64_t>(wanted, 1, int64_t{multiprocessors} * kBlocksPerMultiprocessor));
    count_bins_kernel<<<blocks, kThreads, shared, static_cast<cudaStream_t>(stream)>>>(
        part, count, head, binning, static_cast<int>(bins), reinterpret_cast<unsigned long long*>(counts));
    check(cudaGetLastError(), "kernel launch");
  }
  return true;
}

}  // namespace qforge
