#include "metrics/predictions.h"

#include <vector>

namespace qforge {

std::optional<at::Tensor> prediction_logits(const c10::IValue& output, int64_t rows) {
  if (!output.isTensor()) return std::nullopt;
  const auto& t = output.toTensor();
  if (t.dim() < 2 || t.dim() > 3 || t.size(0) != rows || t.size(-1) < 2 || !t.is_floating_point()) return std::nullopt;
  return t.reshape({-1, t.size(-1)});
}

std::optional<at::Tensor> class_labels(const at::Tensor& labels, const at::Tensor& output) {
  if (!labels.defined()) return std::nullopt;
  const auto& shape = output.sizes();
  const std::vector<int64_t> expected(shape.begin(), shape.end() - 1);  // the output's shape less its classes
  if (labels.sizes() != at::IntArrayRef(expected)) return std::nullopt;
  if (labels.is_floating_point() && !labels.eq(labels.round()).all().item<bool>()) return std::nullopt;
  return labels.reshape({-1}).to(output.device(), at::kLong);
}

}  // namespace qforge
