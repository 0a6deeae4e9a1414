// Pruning one layer's weight: which of its weights become zero (the mask),
// by magnitude, by Wanda's |w|·‖x‖ or by SparseGPT's solve, unstructured or
// N:M, and what that costs the layer's outputs on the calibration inputs.
#pragma once
#include <ATen/Tensor.h>

#include <string>

#include "qforge/compile.h"

namespace qforge {

struct PrunedWeight {
  at::Tensor weight;  // the weight's shape and dtype; zero where pruned
  at::Tensor mask;    // bool, the weight's shape, true = kept
};

// `hessian`: XᵀX/N of the layer's inputs ([inputs, inputs] float64), needed by
// wanda and sparsegpt (Linear layers); undefined for magnitude. N:M groups run
// along a Linear layer's inputs, or a convolution's input channels at each
// kernel position (as TensorRT reads 2:4).
PrunedWeight prune_weight(const at::Tensor& weight, const at::Tensor& hessian, const LayerPruning& pruning,
                          const PruningSettings& settings, const std::string& layer);

// ‖(W - Ŵ)X‖² / ‖WX‖² over the inputs behind `hessian` (Linear layers).
double relative_output_error(const at::Tensor& dense, const at::Tensor& pruned, const at::Tensor& hessian);

}  // namespace qforge
