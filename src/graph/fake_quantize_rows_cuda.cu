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

// The gradients of x and of each element's share of its row's scale, as
// ATen's learnable fake quantization computes them: inside the grid dy and
// dy·(y − x)·(1/s), below it 0 and dy·(quant_min − z), above it 0 and
// dy·(quant_max − z).
__global__ void fake_quantize_rows_gradients_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                                                    int64_t n, int64_t columns, const float* __restrict__ scale,
                                                    const int32_t* __restrict__ zero_point, float quant_min,
                                                    float quant_max, float* __restrict__ dx,
                                                    float* __restrict__ dscale) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t row = i / columns;
    const float s = scale[row], z = static_cast<float>(zero_point[row]), inverse = __fdiv_rn(1.0f, s);
    const float code = __fadd_rn(nearbyintf(__fmul_rn(x[i], inverse)), z);
    const float clamped = code != code ? code : fminf(fmaxf(code, quant_min), quant_max);
    const float g = dy[i];
    if (clamped == code) {
      dx[i] = g;
      const float y = __fmul_rn(__fsub_rn(clamped, z), s);
      dscale[i] = __fmul_rn(__fmul_rn(g, __fsub_rn(y, x[i])), inverse);
    } else {
      dx[i] = 0.0f;
      dscale[i] = __fmul_rn(g, __fsub_rn(clamped, z));
    }
  }
}

int blocks_for(int64_t n) { return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65536)); }

void check_launch() {
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess)
    throw Error(std::string("fake quantization on the GPU: kernel launch: ") + cudaGetErrorString(status));
}

}  // namespace

void fake_quantize_rows_cuda(const float* x, int64_t rows, int64_t columns, const float* scale,
                             const int32_t* zero_point, int64_t quant_min, int64_t quant_max, float* y, bool* inside,
                             void* stream) {
  const int64_t n = rows * columns;
  if (n <= 0) return;
  fake_quantize_rows_kernel<<<blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      x, n, columns, scale, zero_point, static_cast<float>(quant_min), static_cast<float>(quant_max), y, inside);
  check_launch();
}

void fake_quantize_rows_gradients_cuda(const float* x, const float* dy, int64_t rows, int64_t columns,
                                       const float* scale, const int32_t* zero_point, int64_t quant_min,
                                       int64_t quant_max, float* dx, float* dscale, void* stream) {
  const int64_t n = rows * columns;
  if (n <= 0) return;
  fake_quantize_rows_gradients_kernel<<<blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      x, dy, n, columns, scale, zero_point, static_cast<float>(quant_min), static_cast<float>(quant_max), dx, dscale);
  check_launch();
}

}  // namespace qforge
