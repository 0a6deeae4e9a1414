// Activation observers, reduced across ranks so that any number of ranks
// gives bit-identical quantization parameters. One pass over the data:
//   - every rank tracks min and max; all-reduce MIN / MAX;
//   - percentile, entropy and mse observers also count values into int64
//     bins of a power-of-two grid (histogram_grid.h) that grows with the
//     range by merging pairs of bins, which is exact. The grid of the reduced
//     range is a function of that range alone: each rank merges its bins
//     onto it; all-reduce SUM.
// The range is then chosen from the reduced statistics alone, identically on
// every rank. Nothing averages per-rank values, and no bin depends on the
// order or the grouping of the batches, so the result is the one a single
// rank computes over all the data.
#pragma once
#include <ATen/Tensor.h>

#include <vector>

#include "qforge/compile.h"
#include "quant/entropy_threshold.h"
#include "quant/histogram_grid.h"
#include "quant/quantization.h"
#include "runtime/communicator.h"

namespace qforge {

class ActivationObserver {
 public:
  explicit ActivationObserver(const TensorQuantSettings& settings);

  // Tracks the range and, for percentile, entropy and mse, the histogram.
  // `partial_extrema`, when given, holds x's range already reduced per block
  // by the op that computed x (graph/observe_op.h): the range is then
  // reduced from it instead of from x.
  void observe(const at::Tensor& x, const at::Tensor& partial_extrema = at::Tensor());
  bool needs_histogram() const;

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
  // The histogram on the grid of the observed (after reduce_ranges: the
  // reduced) range: at least histogram_bins equal bins over [0, max |x|],
  // from the bin of the minimum to that of the maximum; empty for min/max
  // observers and before any finite value.
  const std::vector<int64_t>& histogram() const {
    finish_histogram();
    return counts_;
  }
  // The histogram's edges: [lo, hi] of x (asymmetric) or of |x| (symmetric).
  std::pair<double, double> histogram_edges() const {
    finish_histogram();
    return {grid_lo_, grid_hi_};
  }

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
  void observe_range(const at::Tensor& x, const at::Tensor& partial_extrema);
  // Counts x into the running histogram; `batch_range` holds x's min and max.
  void count(const at::Tensor& x, const at::Tensor& batch_range);
  bool count_with_kernel(const at::Tensor& x, const at::Tensor& batch_range);  // false: count another way
  void fold_extrema() const;  // the filled slots of extrema_ into pending_min_/max_
  // counts_ and the grid's edges from the running histogram and the range.
  void finish_histogram() const;

  TensorQuantSettings settings_;
  mutable double min_, max_;
  // The running histogram on the host: its grid's exponent and window (histogram_grid.h).
  mutable HistogramWindow window_;
  // On a GPU the running histogram's exponent ([1] int32) and window live on
  // the device, grown by qforge's kernel; settle() merges them into window_.
  mutable at::Tensor device_exponent_, device_window_;
  // The final histogram; `finished_` once computed from the current statistics.
  mutable bool finished_ = false;
  mutable double grid_lo_ = 0, grid_hi_ = 0;
  mutable std::vector<int64_t> counts_;
  mutable at::Tensor pending_min_, pending_max_;  // undefined when nothing is pending
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
// The histograms of every observer that needs one and saw finite values on
// some rank, each put on the grid of its reduced range (call reduce_ranges
// first), summed across ranks in one collective (int64: exact).
void reduce_histograms(std::vector<ActivationObserver>& observers, Communicator* comm);

// Range choices on a histogram of `counts` over [lo, hi] (equal-width bins).
// Symmetric histograms are of |x| over [0, amax].
double percentile_threshold(const std::vector<int64_t>& counts, double lo, double hi, double percentile);
// The range that minimizes the expected squared quantization error over the
// histogram, among the observed range [observed_lo, observed_hi] shrunk.
std::pair<double, double> mse_range(const std::vector<int64_t>& counts, double lo, double hi, double observed_lo,
                                    double observed_hi, const QuantRange& range, bool symmetric);

WeightQuant observe_weight(const at::Tensor& weight, const TensorQuantSettings& settings);
// The weight rounded onto its grid (same shape as `weight`).
at::Tensor fake_quantize_weight(const at::Tensor& weight, const WeightQuant& q, const TensorQuantSettings& settings);

}  // namespace qforge
