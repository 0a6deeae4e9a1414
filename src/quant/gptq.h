// GPTQ (Frantar et al., 2022): a Linear layer's weight is rounded one input
// column at a time, and each column's rounding error is spread over the
// columns not yet rounded through the inverse Hessian of the layer's inputs,
// H = XᵀX / N, so that the layer's outputs on the calibration data move least.
// The result lies on the quantization grid of the layer's settings, so the
// compiled and exported models compute exactly with it.
#pragma once
#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <string>

#include "qforge/compile.h"

namespace qforge {

// XᵀX summed over every rank's inputs of one layer, exactly: each batch's
// product is rounded to a fixed-point int64 grid chosen from the reduced
// maximum |x| and vector count, so summing batches (and ranks, with an
// all-reduce SUM) is integer addition, independent of order and rank count.
class HessianSum {
 public:
  // `max_abs`: the largest |x| over all ranks; `vectors`: input rows over all ranks.
  HessianSum(int64_t inputs, double max_abs, int64_t vectors, const c10::Device& device);
  // x: [..., inputs]; its rows are input vectors.
  void add(const at::Tensor& x);
  // The int64 sums, to all-reduce with SUM.
  at::Tensor& sums() { return sums_; }
  // XᵀX / N in float64.
  at::Tensor hessian() const;

 private:
  int64_t inputs_;
  int64_t vectors_;
  int exponent_;  // the fixed-point grid is 2^-exponent_
  at::Tensor sums_;
};

// Which weights a solve sets to zero. `held`: a mask kept from an earlier
// pruning (bool, the weight's shape, true = kept). Otherwise the solve chooses
// (SparseGPT): `sparsity` of every block of columns (m = 0), or n kept of
// every m consecutive columns of each row.
struct SolveSparsity {
  at::Tensor held;
  double sparsity = 0;
  int64_t n = 0, m = 0;
  bool chooses() const { return !held.defined() && (m > 0 || sparsity > 0); }
};

struct GptqResult {
  at::Tensor weight;  // on the grid, in the weight's shape, dtype and device
  WeightQuant quant;  // in the layout observe_weight gives for the same settings
};

// Solves one layer. `hessian`: [inputs, inputs] float64, inputs = the weight's
// second axis. Parameters come from the weight observer of `settings` (per
// tensor and per channel from the whole weight; per group from the group's
// columns as they stand when the solve reaches them, or with act_order from
// the original weight, so groups stay contiguous). ModelError names `layer`
// when the dampened Hessian is not positive definite.
// With a held mask, the pruned weights stay zero and their neighbours make up
// for the rounding as before (pruning and quantization through one Hessian).
GptqResult gptq_quantize(const at::Tensor& weight, const at::Tensor& hessian, const WeightQuantSettings& settings,
                         const std::string& layer, const SolveSparsity& sparsity = {});

// SparseGPT (Frantar & Alistarh, 2023): GPTQ's solve without the grid; the
// weights `sparsity` chooses become zero and the kept ones of later columns
// make up for them. Returns the pruned weight (the weight's dtype) and its mask.
struct SparseGptResult {
  at::Tensor weight;
  at::Tensor mask;  // bool, true = kept
};
SparseGptResult sparsegpt_prune(const at::Tensor& weight, const at::Tensor& hessian, const SolveSparsity& sparsity,
                                double dampening, int64_t block_size, const std::string& layer);

// Whether GPTQ can solve a layer of this type and weight shape (Linear).
bool gptq_applies(const LayerInfo& layer);

}  // namespace qforge
