#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "quant/entropy_threshold.h"

using qforge::entropy_threshold;

namespace {

// KL(P || Q) of the candidate that keeps bins [0, i), straight from the
// definition, one bin at a time (infinity where P or Q is empty).
double reference_divergence(const std::vector<int64_t>& counts, int64_t i, int64_t levels) {
  const auto bins = static_cast<int64_t>(counts.size());
  std::vector<double> p(counts.begin(), counts.begin() + i), q(i, 0.0);
  for (int64_t b = i; b < bins; ++b) p[i - 1] += static_cast<double>(counts[b]);
  const double per_level = static_cast<double>(i) / static_cast<double>(levels);
  for (int64_t l = 0; l < levels; ++l) {
    const auto start = static_cast<int64_t>(std::floor(l * per_level));
    const int64_t stop = l == levels - 1 ? i : static_cast<int64_t>(std::floor((l + 1) * per_level));
    double sum = 0;
    int64_t nonempty = 0;
    for (int64_t b = start; b < stop; ++b) {
      sum += static_cast<double>(counts[b]);
      nonempty += counts[b] != 0;
    }
    for (int64_t b = start; b < stop; ++b)
      if (counts[b] != 0) q[b] = sum / static_cast<double>(nonempty);
  }
  double p_sum = 0, q_sum = 0;
  for (int64_t b = 0; b < i; ++b) p_sum += p[b], q_sum += q[b];
  if (p_sum == 0 || q_sum == 0) return std::numeric_limits<double>::infinity();
  double kl = 0;
  for (int64_t b = 0; b < i; ++b)
    if (p[b] != 0) kl += q[b] > 0 ? p[b] / p_sum * std::log(p[b] / p_sum / (q[b] / q_sum)) : p[b] / p_sum * 1e9;
  return kl;
}

// The candidate (number of bins kept) that a threshold stands for.
int64_t kept_bins(double threshold, double amax, int64_t bins) {
  if (threshold >= amax) return bins;
  return static_cast<int64_t>(std::lround(threshold / (amax / static_cast<double>(bins)) - 0.5));
}

// The threshold's candidate has the least divergence of all, up to rounding.
void expect_least_divergence(const std::vector<int64_t>& counts, int64_t bits, const std::string& what) {
  const auto bins = static_cast<int64_t>(counts.size());
  const int64_t levels = int64_t{1} << (bits - 1);
  const double amax = 7.5;
  const int64_t chosen = kept_bins(entropy_threshold(counts, amax, bits), amax, bins);
  double best = std::numeric_limits<double>::infinity();
  int64_t best_i = bins;
  for (int64_t i = levels; i <= bins; ++i)
    if (const double kl = reference_divergence(counts, i, levels); kl < best) best = kl, best_i = i;
  if (chosen == best_i) return;
  const double at_chosen = reference_divergence(counts, chosen, levels);
  EXPECT_LE(at_chosen - best, 1e-12 * std::max(1.0, std::abs(best)))
      << what << ", " << bits << " bits: kept " << chosen << " bins (KL " << at_chosen << "), the least KL keeps "
      << best_i << " (KL " << best << ")";
}

std::vector<int64_t> histogram(int64_t bins, int64_t values, uint32_t seed, double tail, double empty_share) {
  std::mt19937 generator(seed);
  std::exponential_distribution<double> magnitude(1.0);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<int64_t> counts(bins, 0);
  std::vector<bool> empty(bins);
  for (auto&& e : empty) e = unit(generator) < empty_share;
  for (int64_t k = 0; k < values; ++k) {
    const auto b = static_cast<int64_t>(magnitude(generator) / tail * static_cast<double>(bins));
    if (b < bins && !empty[b]) ++counts[b];
  }
  return counts;
}

}  // namespace

TEST(EntropyThreshold, KeepsTheCandidateOfLeastDivergence) {
  for (int64_t bits : {8, 4})
    for (int64_t bins : {300, 2048, 3001}) {
      expect_least_divergence(histogram(bins, 200000, 1, 12.0, 0.0), bits, "a long tail");
      expect_least_divergence(histogram(bins, 200000, 2, 4.0, 0.0), bits, "a short tail");
      expect_least_divergence(histogram(bins, 50000, 3, 12.0, 0.3), bits, "a third of the bins empty");
      std::vector<int64_t> spikes(bins, 0);  // outliers far above a dense core, empty bins between
      for (int64_t b = 0; b < bins / 10; ++b) spikes[b] = 1000 - b;
      spikes[bins - 1] = 3, spikes[bins / 2] = 5;
      expect_least_divergence(spikes, bits, "a core and two spikes");
      expect_least_divergence(std::vector<int64_t>(bins, 40), bits, "uniform");
    }
}

TEST(EntropyThreshold, ClipsAHeavyTailAndKeepsWhatCannotBeSplit) {
  const auto tail = histogram(2048, 200000, 1, 12.0, 0.0);
  EXPECT_LT(entropy_threshold(tail, 7.5, 8), 7.5 * 0.9);
  EXPECT_EQ(entropy_threshold(std::vector<int64_t>(2048, 0), 7.5, 8), 7.5);  // no values
  EXPECT_EQ(entropy_threshold(std::vector<int64_t>(128, 9), 7.5, 8), 7.5);   // no more bins than levels
}

TEST(EntropyThreshold, TheSameOnAnyThreadCount) {
  const int before = at::get_num_threads();
  std::vector<double> chosen;
  for (int threads : {1, 3, 8}) {
    at::set_num_threads(threads);
    chosen.push_back(entropy_threshold(histogram(4096, 100000, 5, 12.0, 0.1), 7.5, 8));
  }
  at::set_num_threads(before);
  EXPECT_EQ(chosen[0], chosen[1]);
  EXPECT_EQ(chosen[0], chosen[2]);
}
