// Dynamic axes, following clika_compile's rule: an axis is dynamic when its size
// differs between any two tracing samples.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "qforge/compile.h"

namespace qforge {

// shapes[s][i] is the shape of input i in tracing sample s. Throws ModelError
// when an input's rank differs between samples.
std::vector<InputAxes> find_dynamic_axes(const std::vector<std::string>& input_names,
                                         const std::vector<std::vector<std::vector<int64_t>>>& shapes);

}  // namespace qforge
