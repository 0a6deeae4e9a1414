// The calibration ops, which the calibration graph (with_observers) calls:
//   qforge::observe(Tensor x, int point, bool written_later) -> ()
//     before each observed layer;
//   qforge::observed_clamp(Tensor x, int[] points, float lower, float upper,
//                          bool inplace, bool written_later) -> Tensor
//     in place of a ReLU, ReLU6 or hardtanh whose result those points
//     observe (fuse_observations.h).
// They forward the observed tensors to the sink of the ObserveScope alive in
// this process; the ops exist only in-process and never reach a saved model.
#pragma once
#include <ATen/Tensor.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace qforge {

struct Observation {
  int64_t point;
  at::Tensor x;
  // x's min and max already reduced per block of a GPU kernel by the op that
  // computed x: [2, blocks] float32, row 0 the minima, row 1 the maxima (NaN
  // where a block saw NaN), on x's device; undefined otherwise.
  at::Tensor partial_extrema;
  // The graph writes x in place later on: work queued to read x on another
  // stream would race that write.
  bool written_later = false;

  // What an observer reads: x, and the extrema where given.
  std::vector<at::Tensor> tensors() const {
    return partial_extrema.defined() ? std::vector<at::Tensor>{x, partial_extrema} : std::vector<at::Tensor>{x};
  }
};

using ObservationSink = std::function<void(const Observation&)>;
using ObserveSink = std::function<void(int64_t point, const at::Tensor& x)>;

// While alive, the ops call the sink. With an ObservationSink, observed_clamp
// runs its fused kernel where one applies (ObserveSink: the op it replaced).
// One scope at a time per process.
class ObserveScope {
 public:
  explicit ObserveScope(ObservationSink sink);
  explicit ObserveScope(ObserveSink sink);
  ~ObserveScope();
  ObserveScope(const ObserveScope&) = delete;
  ObserveScope& operator=(const ObserveScope&) = delete;
};

}  // namespace qforge
