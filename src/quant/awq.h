// The per-input-channel scales of AWQ (Lin et al., 2023) and SmoothQuant
// (Xiao et al., 2023). Both divide a layer's input channels by s and multiply
// its weight's input columns by s (graph/input_scales.h applies them).
//   AWQ: s = mean|x|^a, normalized so that max(s)·min(s) = 1, with the
//   exponent a searched on a grid for the least output error of the
//   quantized weights; a = 0 (no scaling) is among the candidates, so the
//   search never does worse than rounding to nearest on the calibration data.
//   SmoothQuant: s = max|x|^alpha / max|W|^(1-alpha), which evens out the
//   channels' ranges between activations and weights before W8A8.
#pragma once
#include <ATen/Tensor.h>

#include <vector>

#include "qforge/config.h"

namespace qforge {

// AWQ's candidate scales for exponent `alpha`; `mean_abs`: [C] mean |x| per input channel.
at::Tensor awq_scales(const at::Tensor& mean_abs, double alpha);

// The error one candidate leaves in a group's weights: for each weight W
// (with its settings), Q(W·diag(s))·diag(1/s) − W, rows stacked: [Σ outputs, C],
// float32 on the weights' device. Its product with an input row is the
// change of the layers' outputs.
at::Tensor awq_weight_error(const std::vector<at::Tensor>& weights, const std::vector<WeightQuantSettings>& settings,
                            const at::Tensor& scales);

// SmoothQuant's scales for a group of weights ([outputs, C] each) reading one
// input with per-channel `max_abs` ([C]); channels with no activation or no
// weight keep s = 1.
at::Tensor smoothquant_scales(const at::Tensor& max_abs, const std::vector<at::Tensor>& weights, double alpha);

}  // namespace qforge
