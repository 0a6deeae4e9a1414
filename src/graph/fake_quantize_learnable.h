// qforge::fake_quantize_learnable, the fake quantization that learned ranges
// (LSQ, fine_tune.learn_ranges) train through: ATen's
// _fake_quantize_learnable_per_{tensor,channel}_affine's values and
// gradients (x: straight through inside the grid; scale: the LSQ gradient,
// grad_factor 1), without waiting for the device. ATen's per-tensor op reads
// its scale and zero point on the host in the forward and again in the
// backward, four host synchronizations per quantized activation and step.
// The zero points are fixed (int32) and get no gradient.
#pragma once
#include <ATen/Tensor.h>

namespace qforge {

// axis < 0: per tensor (scale and zero_point hold one value); else one scale
// and zero point per index along `axis`.
at::Tensor fake_quantize_learnable(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                                   int64_t axis, int64_t quant_min, int64_t quant_max);

}  // namespace qforge
