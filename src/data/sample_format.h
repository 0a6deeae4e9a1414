// The version of the calibration HDF5 layout this qforge reads (docs/data.md).
// The Python writer (qforge.data) stamps the same number
// into every file it writes; a test holds the two equal.
#pragma once
#include <cstdint>

namespace qforge {

constexpr int64_t kSampleFormatVersion = 1;

}  // namespace qforge
