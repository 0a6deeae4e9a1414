#include "quant/entropy_threshold.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <thread>

namespace qforge {
namespace {

// Sums over the bins [0, b) for every b, so that a candidate's divergence
// costs one term per level instead of one per bin. Searching bin by bin was
// quadratic in the bins: 85 ms per observer at 4,096 bins.
struct BinSums {
  std::vector<int64_t> count, nonempty;
  // sum of c·log(c): long double, since a level's sum is a difference of two
  // such prefixes, which cancel in their late digits (the rest is double)
  std::vector<long double> count_log_count;

  explicit BinSums(const std::vector<int64_t>& counts)
      : count(counts.size() + 1, 0), nonempty(counts.size() + 1, 0), count_log_count(counts.size() + 1, 0) {
    for (size_t b = 0; b < counts.size(); ++b) {
      const auto c = static_cast<long double>(counts[b]);
      count[b + 1] = count[b] + counts[b];
      nonempty[b + 1] = nonempty[b] + (counts[b] != 0);
      count_log_count[b + 1] = count_log_count[b] + (counts[b] != 0 ? c * std::log(c) : 0);
    }
  }
};

// KL(P || Q) for the candidate that keeps bins [0, i), times the total count.
// P: the counts, the values at or above bin i added to bin i - 1. Q: each
// level's count spread evenly over its non-empty bins. For a non-empty bin b
// of level l, log p_b - log q_b = log(c_b / T) - log(S_l / N_l / Q), with T
// all values, Q those below bin i, S_l and N_l the level's count and
// non-empty bins; summed over the level, that is its c·log(c) sum minus S_l
// times a constant.
double scaled_divergence(const BinSums& sums, const std::vector<int64_t>& counts, int64_t i, int64_t levels) {
  const int64_t bins = static_cast<int64_t>(counts.size());
  const double log_total = std::log(static_cast<double>(sums.count[bins]));
  const double log_kept = std::log(static_cast<double>(sums.count[i]));
  const double per_level = static_cast<double>(i) / static_cast<double>(levels);
  const int64_t last = i - 1;  // holds the outliers in P, not in Q
  double sum = 0;
  for (int64_t l = 0; l < levels; ++l) {
    const auto start = static_cast<int64_t>(std::floor(l * per_level));
    const int64_t stop = l == levels - 1 ? i : static_cast<int64_t>(std::floor((l + 1) * per_level));
    const int64_t level_count = sums.count[stop] - sums.count[start];
    if (level_count == 0) continue;
    const int64_t level_bins = sums.nonempty[stop] - sums.nonempty[start];
    const double log_q = std::log(static_cast<double>(level_count) / static_cast<double>(level_bins)) - log_kept;
    double c_log_c = static_cast<double>(sums.count_log_count[stop] - sums.count_log_count[start]);
    auto c = static_cast<double>(level_count);
    if (stop == i && counts[last] != 0) {  // bin i - 1 is added below, with its outliers
      const auto c_last = static_cast<double>(counts[last]);
      c_log_c -= c_last * std::log(c_last);
      c -= c_last;
      const auto p_last = static_cast<double>(counts[last] + sums.count[bins] - sums.count[i]);
      sum += p_last * (std::log(p_last) - log_total - log_q);
    }
    sum += c_log_c - c * (log_total + log_q);
  }
  const int64_t outliers = sums.count[bins] - sums.count[i];
  if (counts[last] == 0 && outliers > 0) sum += static_cast<double>(outliers) * 1e9;  // mass Q cannot hold
  return sum;
}

}  // namespace

double entropy_threshold(const std::vector<int64_t>& counts, double amax, int64_t bits) {
  const int64_t bins = static_cast<int64_t>(counts.size());
  const int64_t levels = int64_t{1} << (bits - 1);  // positive levels of a symmetric signed grid
  if (bins <= levels) return amax;
  const BinSums sums(counts);
  // Every candidate's divergence, split over the threads qforge computes with,
  // then the first least one in order: the same choice on any thread count.
  // A candidate that keeps no values has no Q: it stays at infinity.
  std::vector<double> divergence(static_cast<size_t>(bins + 1), std::numeric_limits<double>::infinity());
  const auto divergences = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      if (sums.count[i] != 0) divergence[static_cast<size_t>(i)] = scaled_divergence(sums, counts, i, levels);
  };
  const int64_t candidates = bins + 1 - levels;
  const int64_t threads = std::clamp<int64_t>(at::get_num_threads(), 1, candidates / 512 + 1);
  const int64_t chunk = (candidates + threads - 1) / threads;
  std::vector<std::thread> helpers;
  for (int64_t t = 1; t < threads; ++t)
    helpers.emplace_back(divergences, levels + t * chunk, std::min(levels + (t + 1) * chunk, bins + 1));
  divergences(levels, std::min(levels + chunk, bins + 1));
  for (auto& h : helpers) h.join();
  int64_t best_i = bins;
  double best = std::numeric_limits<double>::infinity();
  for (int64_t i = levels; i <= bins; ++i)
    if (divergence[static_cast<size_t>(i)] < best) {
      best = divergence[static_cast<size_t>(i)];
      best_i = i;
    }
  const double width = amax / static_cast<double>(bins);
  return std::min(width * (static_cast<double>(best_i) + 0.5), amax);
}

}  // namespace qforge
