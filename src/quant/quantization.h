// Affine quantization arithmetic: integer ranges, scales and zero points from
// a float range, and the fake quantization that rounds values onto the grid.
// Conventions follow ATen's fake_quantize_* ops, so a compiled model that uses
// those ops computes exactly what this reference computes.
#pragma once
#include <ATen/Tensor.h>

#include <cstdint>

#include "qforge/compile.h"

namespace qforge {

// [-2^(b-1), 2^(b-1)-1] signed, [0, 2^b-1] unsigned; bits 2..8.
QuantRange quant_range(int64_t bits, bool is_signed);

// From a float range [lo, hi] (same shape: [1] or [C]). The range is widened
// to contain 0 so that zero is exact. Symmetric: zero point at the middle of
// the integer range (0 when signed), scale = max(|lo|, |hi|) / floor((qmax - qmin) / 2), so
// the largest magnitude lands on the top code (127 of int8).
// Asymmetric: scale = (hi - lo) / (qmax - qmin), zero point = qmin - round(lo / scale).
QParams qparams_from_range(const at::Tensor& lo, const at::Tensor& hi, const QuantRange& range, bool symmetric);

// Reference fake quantization: (clamp(round(x / s) + z, qmin, qmax) - z) * s,
// per tensor (axis < 0) or along `axis`.
at::Tensor fake_quantize(const at::Tensor& x, const QParams& q, const QuantRange& range, int64_t axis = -1);

// Integer codes of x (same formula without the dequantization).
at::Tensor quantize_codes(const at::Tensor& x, const QParams& q, const QuantRange& range, int64_t axis = -1);

// Signal-to-quantization-noise ratio in dB: 10 log10(|x|^2 / |x - y|^2).
double sqnr_db(const at::Tensor& reference, const at::Tensor& approximation);

}  // namespace qforge
