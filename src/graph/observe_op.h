// The calibration ops, which the calibration graph (with_observers) calls:
//   qforge::observe(Tensor x, int point) -> ()  before each observed layer;
//   qforge::observed_clamp(Tensor x, int[] points, float lower, float upper,
//                          bool inplace) -> Tensor
//     in place of a ReLU, ReLU6 or hardtanh whose result those points
//     observe (fuse_observations.h).
// They forward the observed tensors to the sinks of the ObserveScope alive in
// this process; the ops exist only in-process and never reach a saved model.
#pragma once
#include <ATen/Tensor.h>

#include <cstdint>
#include <functional>

namespace qforge {

using ObserveSink = std::function<void(int64_t point, const at::Tensor& x)>;
// An observation whose min and max the op computing x already reduced per
// block of a GPU kernel: `partial_extrema` is [2, blocks] float32, row 0 the
// minima, row 1 the maxima (NaN where a block saw NaN), on x's device.
using FusedObserveSink = std::function<void(int64_t point, const at::Tensor& x, const at::Tensor& partial_extrema)>;

// While alive, the ops call `sink`, or `fused` for what a fused kernel
// computed (without `fused`, or where no kernel applies, observed_clamp runs
// the op it replaced and calls `sink`). One scope at a time per process.
class ObserveScope {
 public:
  explicit ObserveScope(ObserveSink sink, FusedObserveSink fused = nullptr);
  ~ObserveScope();
  ObserveScope(const ObserveScope&) = delete;
  ObserveScope& operator=(const ObserveScope&) = delete;
};

}  // namespace qforge
