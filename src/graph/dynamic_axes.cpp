#include "graph/dynamic_axes.h"

#include <algorithm>

#include "qforge/errors.h"

namespace qforge {

std::vector<InputAxes> find_dynamic_axes(const std::vector<std::string>& input_names,
                                         const std::vector<std::vector<std::vector<int64_t>>>& shapes) {
  std::vector<InputAxes> out;
  for (size_t i = 0; i < input_names.size(); ++i) {
    InputAxes axes;
    axes.input = input_names[i];
    for (size_t s = 0; s < shapes.size(); ++s) {
      const auto& shape = shapes[s].at(i);
      if (s == 0) {
        axes.min_shape = axes.max_shape = shape;
        continue;
      }
      if (shape.size() != axes.min_shape.size())
        throw ModelError("tracing inputs: input '" + input_names[i] + "' has " + std::to_string(shape.size()) +
                         " axes in sample " + std::to_string(s) + " but " + std::to_string(axes.min_shape.size()) +
                         " in sample 0; only sizes may vary, not the number of axes");
      for (size_t d = 0; d < shape.size(); ++d) {
        axes.min_shape[d] = std::min(axes.min_shape[d], shape[d]);
        axes.max_shape[d] = std::max(axes.max_shape[d], shape[d]);
      }
    }
    for (size_t d = 0; d < axes.min_shape.size(); ++d)
      if (axes.min_shape[d] != axes.max_shape[d]) axes.dynamic.push_back(static_cast<int64_t>(d));
    out.push_back(std::move(axes));
  }
  return out;
}

}  // namespace qforge
