// The forward that qforge's fake-quantization ops share: each element's code
// round(x·(1/s)) + z (ties to even, float32, as ATen's kernels), clamped to
// [quant_min, quant_max], and its value (clamped − z)·s, with one scale and
// zero point for the tensor (axis < 0) or one per index along `axis`. On a
// GPU, float32 with int32 zero points per tensor or along axis 0, it is one
// kernel (fake_quantize_rows_cuda); elsewhere a composition of ATen ops.
#pragma once
#include <ATen/Tensor.h>

#include <utility>

namespace qforge {

struct FakeQuantized {
  at::Tensor values;
  at::Tensor inside;  // bool: the code before clamping lay on the grid (the straight-through gradient passes)
};

FakeQuantized fake_quantize_on_grid(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                                    int64_t axis, int64_t quant_min, int64_t quant_max);

// True where the row kernels take x: x as [rows, columns] with one scale per
// row (per tensor: one row; along axis 0: a row per index).
bool fits_row_kernels(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point, int64_t axis);
// The rows of that layout.
int64_t kernel_rows(const at::Tensor& x, int64_t axis);

// scale and zero point as float32, shaped to broadcast against x.
std::pair<at::Tensor, at::Tensor> broadcastable(const at::Tensor& x, const at::Tensor& scale,
                                                const at::Tensor& zero_point, int64_t axis);
// The codes before and after clamping, as ATen ops (s and z from broadcastable()).
std::pair<at::Tensor, at::Tensor> codes_of(const at::Tensor& x, const at::Tensor& s, const at::Tensor& z,
                                           int64_t quant_min, int64_t quant_max);

}  // namespace qforge
