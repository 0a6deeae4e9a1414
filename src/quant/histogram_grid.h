// The histogram grid of percentile, entropy and mse observers: bins of width
// 2^e numbered floor(t · 2^-e), t = |x| (symmetric) or x, the product
// rounded to the value's floating type (exact but for subnormal products).
// Doubling the width sends bin k to bin floor(k / 2), exactly as counting
// on the wider grid would (floor(floor(y) / 2) = floor(y / 2)). So the
// running histogram can start on the finest grid that holds the first batch
// and widen as the range grows, and histograms counted on different grids
// (other ranks, other batches) add up on the widest of them: the result
// depends on the values alone, not on their order or grouping. One pass
// over the data counts what a pass over a known range would.
// No LibTorch here: the CUDA kernels include it too.
#pragma once
#include <cstdint>
#include <vector>

#ifdef __CUDACC__
#define QFORGE_HOST_DEVICE __host__ __device__
#else
#define QFORGE_HOST_DEVICE
#endif

namespace qforge {

// Exponents stay in [kLowestGridExponent, kHighestGridExponent], where 2^-e
// is a normal float32 (exact as a multiplier).
constexpr int kLowestGridExponent = -100;
constexpr int kHighestGridExponent = 126;
constexpr int kNoGrid = -1000;  // the exponent of a window that has counted nothing

// The running histogram's window: bins [0, 2^h) of |x| (symmetric) or
// [-2^h, 2^h) of x, with 2^h at least twice histogram_bins, so that the
// finest grid that holds a range has at least histogram_bins bins over
// [0, max |x|] (and at most twice as many).
struct GridShape {
  int log2_half = 0;  // h
  bool symmetric = true;
  int64_t half() const { return int64_t{1} << log2_half; }
  int64_t bins() const { return symmetric ? half() : 2 * half(); }
  int64_t offset() const { return symmetric ? 0 : half(); }  // the window index of bin 0
};
GridShape grid_shape(int64_t histogram_bins, bool symmetric);

// The exponent of the finest grid whose window holds every value of
// magnitude below 2^amax_exponent (frexp's exponent of the largest |x|).
QFORGE_HOST_DEVICE inline int grid_exponent_for(int amax_exponent, int log2_half) {
  const int e = amax_exponent - log2_half;
  return e < kLowestGridExponent ? kLowestGridExponent : e > kHighestGridExponent ? kHighestGridExponent : e;
}
// The same from the largest |x| itself (0 or not finite: the lowest exponent).
int grid_exponent(double amax, const GridShape& shape);

// floor(k / 2^shift) for any sign of k.
QFORGE_HOST_DEVICE inline int64_t floor_shift(int64_t k, int shift) {
  return k >= 0 ? k >> shift : -((-k - 1) >> shift) - 1;
}

struct HistogramWindow {
  int exponent = kNoGrid;
  std::vector<int64_t> counts;  // shape.bins() of them once exponent != kNoGrid
};

// Moves `window` onto the grid of exponent `e` (not below its own), merging
// bins; a window that counted nothing gets zero counts on that grid.
void widen(HistogramWindow& window, int e, const GridShape& shape);
// Adds `other` into `window`, both on the wider of their grids.
void merge(HistogramWindow& window, HistogramWindow other, const GridShape& shape);

struct FinishedHistogram {
  std::vector<int64_t> counts;
  double lo = 0, hi = 0;  // the edges: of x, or of |x| when symmetric
};
// The bins of the grid of the range [lo, hi] (of |x|: from 0 to the
// largest magnitude), from the bin of lo (of 0) to the bin of hi (of the
// largest magnitude). The window must hold values in that range only.
FinishedHistogram finish(HistogramWindow window, double lo, double hi, const GridShape& shape);

}  // namespace qforge
