#include "quant/bias_headroom.h"

#include <cmath>

namespace qforge {

bool make_room_for_int32_bias(ActivationRange& input, const QuantRange& range, bool symmetric, const at::Tensor& bias,
                              const WeightQuant& weight) {
  if (!bias.defined() || bias.numel() == 0 || input.qparams.scale.numel() != 1) return false;
  // On the host: the bias may live on a GPU, the scales do not.
  const at::Tensor weight_scale = weight.qparams.scale.to(at::kCPU, at::kDouble).reshape({-1});
  // Groups of weights (the weight-only formats) run with a float bias.
  if (weight_scale.numel() != 1 && weight_scale.numel() != bias.numel()) return false;
  constexpr double kLargestCode = 2147483647.0 / 4;  // room for the runtime's own sums
  const double needed = (bias.detach().to(at::kCPU, at::kDouble).abs().reshape({-1}) / (weight_scale * kLargestCode))
                            .max()
                            .item<double>();
  if (!(needed > input.qparams.scale.item<double>())) return false;
  input.qparams.scale = at::full_like(input.qparams.scale, needed * (1 + 1e-6));  // float32 rounds down no further
  if (!symmetric) {
    const double zero = static_cast<double>(range.qmin) - std::nearbyint(input.lo / input.qparams.scale.item<double>());
    input.qparams.zero_point =
        at::full_like(input.qparams.zero_point,
                      static_cast<int64_t>(std::min<double>(std::max<double>(zero, range.qmin), range.qmax)));
  }
  return true;
}

}  // namespace qforge
