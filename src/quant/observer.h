// Activation observers, reduced across ranks so that any number of ranks
// gives bit-identical quantization parameters:
//   pass 1: every rank tracks min and max; all-reduce MIN / MAX.
//   pass 2 (percentile, entropy, mse only): every rank counts values into int64
//           bins of a grid fixed by the reduced range; all-reduce SUM.
// The range is then chosen from the reduced statistics alone, identically on
// every rank. Nothing averages per-rank values, so the result is the one a
// single rank computes over all the data.
#pragma once
#include <ATen/Tensor.h>

#include <vector>

#include "qforge/compile.h"
#include "quant/quantization.h"
#include "runtime/communicator.h"

namespace qforge {

class ActivationObserver {
 public:
  explicit ActivationObserver(const TensorQuantSettings& settings);

  // Pass 1 before begin_histogram(), pass 2 after.
  void observe(const at::Tensor& x);
  bool needs_histogram() const;
  void begin_histogram();

  // The chosen float range and its quantization parameters.
  using Result = ActivationRange;
  Result compute() const;

  double observed_min() const {
    settle();
    return min_;
  }
  double observed_max() const {
    settle();
    return max_;
  }
  const std::vector<int64_t>& histogram() const {
    settle();
    return counts_;
  }
  // The histogram's edges: [lo, hi] of x (asymmetric) or of |x| (symmetric); {0, 0} before pass 2.
  std::pair<double, double> histogram_edges() const { return {grid_lo_, grid_hi_}; }

  // Whether observing a tensor gathers the same statistics here as in
  // `other` (their choice of range from them may still differ).
  bool gathers_like(const ActivationObserver& other) const;
  // Takes the statistics `other` gathered from the tensors this observer
  // would have seen (other.gathers_like(*this)), as if it had observed them.
  void take_statistics(const ActivationObserver& other);

 private:
  friend void reduce_ranges(std::vector<ActivationObserver>& observers, Communicator* comm);
  friend void reduce_histograms(std::vector<ActivationObserver>& observers, Communicator* comm);

  // Folds what observe() accumulated on the activations' device into the
  // host values: observe() never waits for a GPU, readers settle first.
  void settle() const;
  void observe_range(const at::Tensor& x);
  void count(const at::Tensor& x);
  bool count_with_kernel(const at::Tensor& x);  // false: no kernel for this tensor, count another way
  void fold_extrema() const;                    // the filled slots of extrema_ into pending_min_/max_

  TensorQuantSettings settings_;
  mutable double min_, max_;
  bool histogram_started_ = false;
  double grid_lo_ = 0, grid_hi_ = 0;  // the histogram's edges
  mutable std::vector<int64_t> counts_;
  mutable at::Tensor pending_min_, pending_max_, pending_counts_;  // undefined when nothing is pending
  // Each observation's min and max in a slot of their own ([slots, 2], the
  // activations' type and device): one kernel per observation, folded when full.
  mutable at::Tensor extrema_;
  mutable int64_t extrema_used_ = 0;
};

// Pass 1's ranges of every observer reduced across ranks in one collective:
// the minima and the negated maxima in one tensor, all-reduced with MIN,
// which is exact, so the ranges do not depend on the rank count. Null
// `comm`: this process holds all the data.
void reduce_ranges(std::vector<ActivationObserver>& observers, Communicator* comm);
// Pass 2's counts of every observer whose histogram began, summed across
// ranks in one collective (int64: exact).
void reduce_histograms(std::vector<ActivationObserver>& observers, Communicator* comm);

// Range choices on a histogram of `counts` over [lo, hi] (equal-width bins).
// Symmetric histograms are of |x| over [0, amax].
double percentile_threshold(const std::vector<int64_t>& counts, double lo, double hi, double percentile);
// TensorRT's entropy calibration: the |x| threshold whose quantized
// distribution is closest (KL divergence) to the observed one.
double entropy_threshold(const std::vector<int64_t>& counts, double amax, int64_t bits);
// The range that minimizes the expected squared quantization error over the histogram.
std::pair<double, double> mse_range(const std::vector<int64_t>& counts, double lo, double hi, const QuantRange& range,
                                    bool symmetric);

WeightQuant observe_weight(const at::Tensor& weight, const TensorQuantSettings& settings);
// The weight rounded onto its grid (same shape as `weight`).
at::Tensor fake_quantize_weight(const at::Tensor& weight, const WeightQuant& q, const TensorQuantSettings& settings);

}  // namespace qforge
