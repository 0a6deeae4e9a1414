#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "qforge/errors.h"
#include "quant/clamp_extrema_cuda.h"

namespace qforge {
namespace {

constexpr int kThreads = 256;
constexpr int kBlocksPerMultiprocessor = 8;
constexpr int kWarps = kThreads / 32;

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw Error(std::string("clamp with its range on the GPU: ") + what + ": " + cudaGetErrorString(status));
}

// aminmax's NaN rule: once a NaN is seen, it is both the minimum and the maximum.
__device__ __forceinline__ float min_nan(float a, float b) { return (a != a || a < b) ? a : b; }
__device__ __forceinline__ float max_nan(float a, float b) { return (a != a || a > b) ? a : b; }

struct Bounds {
  float lower, upper;
  // ATen's clamp: NaN stays, else ::min(::max(v, lower), upper) in float
  // (ATen widens half and bfloat16 to float for ::max and ::min).
  __device__ __forceinline__ float apply(float v) const { return v != v ? v : fminf(fmaxf(v, lower), upper); }
};

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__host__ __device__ T from_float(float v);
template <>
__host__ __device__ float from_float<float>(float v) {
  return v;
}
template <>
__host__ __device__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__host__ __device__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

struct Range {
  float lo = INFINITY, hi = -INFINITY;
  __device__ __forceinline__ void add(float v) {
    lo = min_nan(lo, v);
    hi = max_nan(hi, v);
  }
};

template <typename T>
__device__ __forceinline__ void clamp_one(const T* x, T* y, int64_t i, const Bounds& bounds, Range& range) {
  const float r = bounds.apply(to_float(x[i]));
  y[i] = from_float<T>(r);
  range.add(r);
}

// The block's range into partials[blockIdx.x] and partials[gridDim.x + blockIdx.x].
__device__ void write_block_range(Range range, float* partials) {
  __shared__ float lows[kWarps], highs[kWarps];
  for (int offset = 16; offset > 0; offset /= 2) {
    range.lo = min_nan(range.lo, __shfl_down_sync(0xffffffffu, range.lo, offset));
    range.hi = max_nan(range.hi, __shfl_down_sync(0xffffffffu, range.hi, offset));
  }
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) {
    lows[warp] = range.lo;
    highs[warp] = range.hi;
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  Range block;
  for (int w = 0; w < kWarps; ++w) {
    block.lo = min_nan(block.lo, lows[w]);
    block.hi = max_nan(block.hi, highs[w]);
  }
  partials[blockIdx.x] = block.lo;
  partials[gridDim.x + blockIdx.x] = block.hi;
}

template <typename T>
__global__ void clamp_extrema_kernel(const T* x, T* y, int64_t n, Bounds bounds, float* partials) {
  Range range;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    clamp_one(x, y, i, bounds, range);
  write_block_range(range, partials);
}

// float32 as aligned float4 after `head` single values (x and y share their
// alignment: the caller checks).
__global__ void clamp_extrema_float4_kernel(const float* x, float* y, int64_t n, int64_t head, Bounds bounds,
                                            float* partials) {
  Range range;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  if (first < head) clamp_one(x, y, first, bounds, range);
  const int64_t vectors = (n - head) / 4;
  const float4* in = reinterpret_cast<const float4*>(x + head);
  float4* out = reinterpret_cast<float4*>(y + head);
  for (int64_t i = first; i < vectors; i += stride) {
    float4 v = in[i];
    v.x = bounds.apply(v.x);
    v.y = bounds.apply(v.y);
    v.z = bounds.apply(v.z);
    v.w = bounds.apply(v.w);
    out[i] = v;
    range.add(v.x);
    range.add(v.y);
    range.add(v.z);
    range.add(v.w);
  }
  for (int64_t i = head + vectors * 4 + first; i < n; i += stride) clamp_one(x, y, i, bounds, range);
  write_block_range(range, partials);
}

int multiprocessors() {
  int device = 0, count = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  return count;
}

// The bounds as ATen holds them: rounded to the tensor's type.
template <typename T>
Bounds bounds_in(float lower, float upper) {
  return {static_cast<float>(from_float<T>(lower)), static_cast<float>(from_float<T>(upper))};
}

template <typename T>
void launch(const void* x, void* y, int64_t n, Bounds bounds, float* partials, int blocks, cudaStream_t stream) {
  clamp_extrema_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(y), n, bounds,
                                                        partials);
}

}  // namespace

int clamp_extrema_blocks(int64_t n) {
  static const int most = multiprocessors() * kBlocksPerMultiprocessor;  // a process computes on one GPU
  const int64_t wanted = (n / 4 + kThreads - 1) / kThreads;
  return static_cast<int>(std::clamp<int64_t>(wanted, 1, most));
}

void clamp_with_extrema_cuda(const void* x, void* y, int64_t n, ClampElement element, float lower, float upper,
                             float* partials, int blocks, void* stream) {
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const auto x_at = reinterpret_cast<uintptr_t>(x), y_at = reinterpret_cast<uintptr_t>(y);
  switch (element) {
    case ClampElement::Float32:
      if (x_at % 16 == y_at % 16) {
        const int64_t misaligned = (x_at % 16) / sizeof(float);
        const int64_t head = std::min<int64_t>(n, misaligned == 0 ? 0 : 4 - misaligned);
        clamp_extrema_float4_kernel<<<blocks, kThreads, 0, s>>>(static_cast<const float*>(x), static_cast<float*>(y), n,
                                                                head, Bounds{lower, upper}, partials);
      } else {
        launch<float>(x, y, n, Bounds{lower, upper}, partials, blocks, s);
      }
      break;
    case ClampElement::Float16: launch<__half>(x, y, n, bounds_in<__half>(lower, upper), partials, blocks, s); break;
    case ClampElement::BFloat16:
      launch<__nv_bfloat16>(x, y, n, bounds_in<__nv_bfloat16>(lower, upper), partials, blocks, s);
      break;
  }
  check(cudaGetLastError(), "kernel launch");
}

}  // namespace qforge
