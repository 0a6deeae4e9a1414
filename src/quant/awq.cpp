#include "quant/awq.h"

#include <ATen/ATen.h>

#include "quant/observer.h"

namespace qforge {

at::Tensor awq_scales(const at::Tensor& mean_abs, double alpha) {
  // Floored as the reference implementation does, so silent channels are not scaled towards zero.
  const at::Tensor s = mean_abs.to(at::kDouble).pow(alpha).clamp_min(1e-4);
  return s / (s.max() * s.min()).sqrt();
}

at::Tensor awq_weight_error(const std::vector<at::Tensor>& weights, const std::vector<WeightQuantSettings>& settings,
                            const at::Tensor& scales) {
  std::vector<at::Tensor> errors;
  for (size_t k = 0; k < weights.size(); ++k) {
    const at::Tensor w = weights[k].detach().to(at::kFloat);
    const at::Tensor s = scales.to(w.device(), at::kFloat);
    const at::Tensor scaled = w * s;
    const at::Tensor rounded = fake_quantize_weight(scaled, observe_weight(scaled, settings[k]), settings[k]);
    errors.push_back(rounded / s - w);
  }
  return at::cat(errors, 0);
}

at::Tensor smoothquant_scales(const at::Tensor& max_abs, const std::vector<at::Tensor>& weights, double alpha) {
  at::Tensor weight_max = at::zeros_like(max_abs, at::kDouble);
  for (const auto& w : weights)
    weight_max = at::maximum(weight_max, w.detach().abs().amax(0).to(max_abs.device(), at::kDouble));
  const at::Tensor x = max_abs.to(at::kDouble);
  const at::Tensor s = (x.pow(alpha) / weight_max.pow(1.0 - alpha)).clamp_min(1e-5);
  return at::where((x > 0).logical_and(weight_max > 0), s, at::ones_like(s));
}

}  // namespace qforge
