#pragma once

#include <cstdint>
#include <vector>

namespace qforge {

// TensorRT's entropy calibration: the |x| threshold whose quantized
// distribution is closest (KL divergence) to the observed one. `counts` is a
// histogram of |x| over [0, amax] in equal-width bins; each candidate keeps
// the first i bins (the values above folded into bin i - 1) and is compared
// with those bins merged into the 2^(bits-1) levels of a signed grid.
double entropy_threshold(const std::vector<int64_t>& counts, double amax, int64_t bits);

}  // namespace qforge
