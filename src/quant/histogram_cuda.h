// Exact histogram counting on a CUDA device, built only where LibTorch has
// CUDA and nvcc is found (QFORGE_HAVE_CUDA_KERNELS). No LibTorch here: the
// caller passes raw pointers and its stream.
#pragma once
#include <cstdint>

namespace qforge {

// Adds the bin counts of x[0..n) (float32, on the current device) to
// counts[0..bins) (int64 on the same device), on `stream` (a cudaStream_t).
// A value v falls in bin floor(t * bins_per_unit) clamped to [0, bins),
// where t = |v| (absolute) or v - lo, each step rounded to float32 as the
// CPU path's ATen ops round it: both give the same bins for the same values.
// Returns false, counting nothing, when the bins do not fit in a block's
// shared memory (the caller counts another way). Throws qforge::Error when
// the launch fails.
bool count_bins_cuda(const float* x, int64_t n, float lo, float bins_per_unit, bool absolute, int64_t bins,
                     int64_t* counts, void* stream);

}  // namespace qforge
