// fake_quantize_rows's forward on a CUDA device in one kernel (built where
// QFORGE_HAVE_CUDA_KERNELS): a GPU fine-tuning step is bound by the host's
// op launches, and the composition of ATen ops takes seven per weight.
#pragma once
#include <cstdint>

namespace qforge {

// y and `inside` (the code before clamping lies in [quant_min, quant_max]) of
// the [rows, columns] float32 matrix x, row r with scale[r] and the integer
// zero_point[r], with fake_quantize_rows's float32 steps. All pointers on the
// current device; `stream` is a cudaStream_t. Throws qforge::Error when the
// launch fails.
void fake_quantize_rows_cuda(const float* x, int64_t rows, int64_t columns, const float* scale,
                             const int32_t* zero_point, int64_t quant_min, int64_t quant_max, float* y, bool* inside,
                             void* stream);

// The gradients of fake_quantize_learnable (fake_quantize_learnable.h) on the
// same layout: dx (dy inside the grid, 0 where clamped) and each element's
// term of its row's scale gradient in `dscale` (the caller sums each row).
void fake_quantize_rows_gradients_cuda(const float* x, const float* dy, int64_t rows, int64_t columns,
                                       const float* scale, const int32_t* zero_point, int64_t quant_min,
                                       int64_t quant_max, float* dx, float* dscale, void* stream);

}  // namespace qforge
