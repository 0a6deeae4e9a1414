#include "quant/quantization.h"

#include <cmath>
#include <limits>

#include "qforge/errors.h"

namespace qforge {

QuantRange quant_range(int64_t bits, bool is_signed) {
  if (bits < 2 || bits > 8) throw Error("quantization bits must be 2..8, got " + std::to_string(bits));
  if (is_signed) return {-(int64_t{1} << (bits - 1)), (int64_t{1} << (bits - 1)) - 1};
  return {0, (int64_t{1} << bits) - 1};
}

QParams qparams_from_range(const at::Tensor& lo_in, const at::Tensor& hi_in, const QuantRange& range, bool symmetric) {
  // Double precision for the arithmetic, float32 for the stored scale (what ATen's ops take).
  const at::Tensor lo = at::clamp_max(lo_in.to(at::kDouble), 0.0);
  const at::Tensor hi = at::clamp_min(hi_in.to(at::kDouble), 0.0);
  const double levels = static_cast<double>(range.qmax - range.qmin);
  const double tiny = static_cast<double>(std::numeric_limits<float>::min()) * 1e6;
  QParams q;
  if (symmetric) {
    const at::Tensor amax = at::maximum(lo.abs(), hi);
    // amax lands exactly on the top code (127 of int8), as TensorRT and ONNX Runtime expect.
    q.scale = at::clamp_min(amax / std::floor(levels / 2.0), tiny).to(at::kFloat);
    // Signed: 0. Unsigned: the middle code (128 for 8 bits).
    const int64_t middle = range.qmin < 0 ? 0 : (range.qmin + range.qmax + 1) / 2;
    q.zero_point = at::full(lo.sizes(), middle, at::TensorOptions().dtype(at::kInt).device(lo.device()));
  } else {
    q.scale = at::clamp_min((hi - lo) / levels, tiny).to(at::kFloat);
    const at::Tensor zp = (static_cast<double>(range.qmin) - at::round(lo / q.scale.to(at::kDouble)));
    q.zero_point = at::clamp(zp, static_cast<double>(range.qmin), static_cast<double>(range.qmax)).to(at::kInt);
  }
  return q;
}

namespace {
// Scale and zero point shaped to broadcast along `axis` of x.
std::pair<at::Tensor, at::Tensor> broadcastable(const at::Tensor& x, const QParams& q, int64_t axis) {
  if (axis < 0) return {q.scale.reshape({}), q.zero_point.reshape({})};
  std::vector<int64_t> shape(x.dim(), 1);
  shape[axis] = x.size(axis);
  return {q.scale.view(shape), q.zero_point.view(shape)};
}
}  // namespace

at::Tensor quantize_codes(const at::Tensor& x, const QParams& q, const QuantRange& range, int64_t axis) {
  auto [s, z] = broadcastable(x, q, axis);
  // ATen's fake-quant kernels compute round(x * (1/s)) (nearbyint: ties to even).
  const at::Tensor inv = 1.0f / s.to(at::kFloat);
  return at::clamp(at::round(x.to(at::kFloat) * inv) + z.to(at::kFloat), static_cast<double>(range.qmin),
                   static_cast<double>(range.qmax));
}

at::Tensor fake_quantize(const at::Tensor& x, const QParams& q, const QuantRange& range, int64_t axis) {
  auto [s, z] = broadcastable(x, q, axis);
  return ((quantize_codes(x, q, range, axis) - z.to(at::kFloat)) * s.to(at::kFloat)).to(x.scalar_type());
}

double sqnr_db(const at::Tensor& reference, const at::Tensor& approximation) {
  const double signal = reference.to(at::kDouble).pow(2).sum().item<double>();
  const double noise = (reference.to(at::kDouble) - approximation.to(at::kDouble)).pow(2).sum().item<double>();
  if (noise == 0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(signal / noise);
}

}  // namespace qforge
