// Model outputs read as class predictions, and labels as one class per
// prediction: [batch, classes] logits, or a language model's
// [batch, positions, classes] with a prediction per position. The evaluation's
// top-1 and cross-entropy and the fine-tuning's task loss read them alike.
#pragma once
#include <ATen/ATen.h>
#include <ATen/core/ivalue.h>

#include <optional>

namespace qforge {

// The output as [predictions, classes] floating-point logits, when it is one.
std::optional<at::Tensor> prediction_logits(const c10::IValue& output, int64_t rows);

// `labels` as one class index (int64) per prediction of `output`, when they
// have the output's shape less its classes and hold whole numbers (float
// files holding class ids count too).
std::optional<at::Tensor> class_labels(const at::Tensor& labels, const at::Tensor& output);

}  // namespace qforge
