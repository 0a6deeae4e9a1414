#include "quant/histogram_grid.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace qforge {

GridShape grid_shape(int64_t histogram_bins, bool symmetric) {
  GridShape shape;
  shape.symmetric = symmetric;
  shape.log2_half = 1;
  while (shape.half() < 2 * histogram_bins) ++shape.log2_half;
  return shape;
}

int grid_exponent(double amax, const GridShape& shape) {
  if (!(amax > 0) || !std::isfinite(amax)) return kLowestGridExponent;
  int p = 0;
  std::frexp(amax, &p);  // amax = m · 2^p, m in [0.5, 1): amax · 2^(h - p) < 2^h
  return grid_exponent_for(p, shape.log2_half);
}

void widen(HistogramWindow& window, int e, const GridShape& shape) {
  const int64_t bins = shape.bins(), offset = shape.offset();
  if (window.exponent == kNoGrid) {
    window.exponent = e;
    window.counts.assign(static_cast<size_t>(bins), 0);
    return;
  }
  if (e < window.exponent)
    throw std::logic_error("histogram grid: exponent " + std::to_string(e) + " is finer than the window's " +
                           std::to_string(window.exponent));
  if (e == window.exponent) return;
  const int shift = std::min(e - window.exponent, 62);
  std::vector<int64_t> wider(static_cast<size_t>(bins), 0);
  for (int64_t i = 0; i < bins; ++i)
    if (window.counts[static_cast<size_t>(i)] != 0)
      wider[static_cast<size_t>(floor_shift(i - offset, shift) + offset)] += window.counts[static_cast<size_t>(i)];
  window.counts.swap(wider);
  window.exponent = e;
}

void merge(HistogramWindow& window, HistogramWindow other, const GridShape& shape) {
  if (other.exponent == kNoGrid) return;
  const int e = std::max(window.exponent, other.exponent);
  widen(window, e, shape);
  widen(other, e, shape);
  for (size_t i = 0; i < window.counts.size(); ++i) window.counts[i] += other.counts[i];
}

FinishedHistogram finish(HistogramWindow window, double lo, double hi, const GridShape& shape) {
  const double amax = std::max(std::abs(lo), std::abs(hi));
  const int e = grid_exponent(amax, shape);
  widen(window, e, shape);
  const int64_t bins = shape.bins(), offset = shape.offset();
  // Exact in double; a float32 product differs only when subnormal (its bin
  // is 0 or -1 either way). Counts outside fold into the edge bins.
  const double per_unit = std::ldexp(1.0, -e);
  const auto bin_of = [&](double v) {
    return std::clamp(static_cast<int64_t>(std::floor(v * per_unit)), -offset, bins - 1 - offset);
  };
  const int64_t first = shape.symmetric ? 0 : bin_of(lo);
  const int64_t last = std::max(first, bin_of(shape.symmetric ? amax : hi));
  FinishedHistogram out;
  out.counts.assign(static_cast<size_t>(last - first + 1), 0);
  for (int64_t i = 0; i < bins; ++i)
    out.counts[static_cast<size_t>(std::clamp(i - offset, first, last) - first)] +=
        window.counts[static_cast<size_t>(i)];
  const double width = std::ldexp(1.0, e);
  out.lo = static_cast<double>(first) * width;
  out.hi = static_cast<double>(last + 1) * width;
  return out;
}

}  // namespace qforge
