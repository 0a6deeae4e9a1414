// qforge::fake_quantize_rows, the per-channel fake quantization that
// fine-tuning's graphs compute weights with. It gives ATen's
// fake_quantize_per_channel_affine's values (round(x·(1/s)) with ties to
// even, + z, clamped, − z, ·s, in float32) and its straight-through gradient
// (1 inside the grid, 0 where clamped), but never waits for the device:
// ATen's op checks the zero points' range with two host synchronizations per
// call, which stalls a GPU step once per quantized weight. A saved model
// keeps ATen's op, which every PyTorch loads.
#pragma once
#include <ATen/Tensor.h>

namespace qforge {

at::Tensor fake_quantize_rows(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point, int64_t axis,
                              int64_t quant_min, int64_t quant_max);

}  // namespace qforge
