// The running histogram of an observer on a CUDA device (histogram_grid.h),
// built only where LibTorch has CUDA and nvcc is found
// (QFORGE_HAVE_CUDA_KERNELS). No LibTorch here: the caller passes raw
// pointers and its stream (a cudaStream_t). Nothing waits for the device.
#pragma once
#include <cstdint>

#include "quant/histogram_grid.h"

namespace qforge {

// Whether a window of `bins` bins fits one block's shared memory on `device`.
bool histogram_kernel_fits(int64_t bins, int device);

// Widens the window (`counts`, shape.bins() int64 on the device) of grid
// exponent `*exponent` (kNoGrid before any count) to the finest grid that
// also holds the batch whose min and max are batch_range[0] and [1]
// (float32, on the device; not finite: the grid stays). `scratch` holds
// shape.bins() int64.
void widen_grid_cuda(const float* batch_range, const GridShape& shape, int32_t* exponent, int64_t* counts,
                     int64_t* scratch, void* stream);

// Adds the bins of x[0..n) (float32, on the device) on the window's grid to
// `counts`: bin floor(t · 2^-e), t = |x| or x, the product rounded to
// float32 as the CPU path rounds it, so both give the same bins for the
// same values. Throws qforge::Error when a launch fails.
void count_on_grid_cuda(const float* x, int64_t n, const GridShape& shape, const int32_t* exponent, int64_t* counts,
                        void* stream);

}  // namespace qforge
