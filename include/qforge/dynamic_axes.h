// Dynamic axes, following the seed's rule: an axis is dynamic when its size
// differs between any two tracing samples.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace qforge {

struct InputAxes {
  std::string input;
  std::vector<int64_t> min_shape;  // per axis, smallest size seen
  std::vector<int64_t> max_shape;  // per axis, largest size seen
  std::vector<int64_t> dynamic;    // axes whose size varies
};

// shapes[s][i] is the shape of input i in tracing sample s. Throws ModelError
// when an input's rank differs between samples.
std::vector<InputAxes> find_dynamic_axes(const std::vector<std::string>& input_names,
                                         const std::vector<std::vector<std::vector<int64_t>>>& shapes);

}  // namespace qforge
