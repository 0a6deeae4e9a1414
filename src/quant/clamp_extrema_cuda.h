// A clamp (ReLU, ReLU6, hardtanh) and the range of its result in one pass
// over memory (built where QFORGE_HAVE_CUDA_KERNELS). Calibration observes
// most activations of a convolutional network right after such a clamp; a
// separate min/max reduction would read each of them once more, and on a GPU
// those reads compete with the convolutions for memory bandwidth. No LibTorch
// here: raw pointers and the caller's stream (a cudaStream_t). Nothing waits
// for the device.
#pragma once
#include <cstdint>

namespace qforge {

enum class ClampElement { Float32, Float16, BFloat16 };

// How many per-block extrema clamp_with_extrema_cuda writes for n values on
// the current device: `partials` holds 2 × that many float32.
int clamp_extrema_blocks(int64_t n);

// y[i] = x[i] clamped to [lower, upper] as ATen's clamp computes it (NaN
// stays NaN; the bounds rounded to x's type first), for i < n (x == y for in
// place), and each block's minimum and maximum of y in partials[b] and
// partials[blocks + b] (float32; NaN when the block saw one, as aminmax
// propagates it; +inf and -inf for a block with no value). Throws
// qforge::Error when the launch fails.
void clamp_with_extrema_cuda(const void* x, void* y, int64_t n, ClampElement element, float lower, float upper,
                             float* partials, int blocks, void* stream);

}  // namespace qforge
