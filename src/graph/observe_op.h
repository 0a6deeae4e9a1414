// The calibration op qforge::observe(Tensor x, int point) -> (), which the
// calibration graph (with_observers) calls before each quantized layer. It
// forwards x to the sink of the ObserveScope alive in this process; the op
// exists only in-process and never reaches a saved model.
#pragma once
#include <ATen/Tensor.h>

#include <cstdint>
#include <functional>

namespace qforge {

using ObserveSink = std::function<void(int64_t point, const at::Tensor& x)>;

// While alive, qforge::observe calls `sink`. One scope at a time per process.
class ObserveScope {
 public:
  explicit ObserveScope(ObserveSink sink);
  ~ObserveScope();
  ObserveScope(const ObserveScope&) = delete;
  ObserveScope& operator=(const ObserveScope&) = delete;
};

}  // namespace qforge
