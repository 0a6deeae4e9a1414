#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "graph/fake_quantize_rows_cuda.h"
#include "qforge/errors.h"

namespace qforge {
namespace {

constexpr int kThreads = 256;

// The steps of fake_quantize_rows's ATen composition, each rounded on its own
// (the _rn intrinsics keep the compiler from fusing them): 1/s, x·(1/s),
// round half to even, + z, clamp (NaN stays NaN), − z, ·s.
__global__ void fake_quantize_rows_kernel(const float* __restrict__ x, int64_t n, int64_t columns,
                                          const float* __restrict__ scale, const int32_t* __restrict__ zero_point,
                                          float quant_min, float quant_max, float* __restrict__ y,
                                          bool* __restrict__ inside) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t row = i / columns;
    const float s = scale[row], z = static_cast<float>(zero_point[row]);
    const float code = __fadd_rn(nearbyintf(__fmul_rn(x[i], __fdiv_rn(1.0f, s))), z);
    const float clamped = code != code ? code : fminf(fmaxf(code, quant_min), quant_max);
    inside[i] = clamped == code;
    y[i] = __fmul_rn(__fsub_rn(clamped, z), s);
  }
}

}  // namespace

void fake_quantize_rows_cuda(const float* x, int64_t rows, int64_t columns, const float* scale,
                             const int32_t* zero_point, int64_t quant_min, int64_t quant_max, float* y, bool* inside,
                             void* stream) {
  const int64_t n = rows * columns;
  if (n <= 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65536));
  fake_quantize_rows_kernel<<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      x, n, columns, scale, zero_point, static_cast<float>(quant_min), static_cast<float>(quant_max), y, inside);
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess)
    throw Error(std::string("fake quantization on the GPU: kernel launch: ") + cudaGetErrorString(status));
}

}  // namespace qforge
