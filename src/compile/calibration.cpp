#include "compile/calibration.h"

#include <algorithm>
#include <cmath>

#include "graph/fake_quant_graph.h"
#include "graph/observe_op.h"
#include "qforge/errors.h"
#include "runtime/logger.h"

namespace qforge {

std::vector<ActivationObserver> calibrate(const torch::jit::Module& model, const std::string& method,
                                          const std::vector<CalibrationPoint>& points, const ForwardFn& run,
                                          const ShardSource& shard, Communicator& comm, PhaseTimer& timer) {
  std::vector<ActivationObserver> observers;
  std::vector<ObservedTensor> tensors;
  bool any_histogram = false;
  for (const auto& p : points) {
    observers.emplace_back(p.settings);
    tensors.push_back({p.layer, p.output});
    any_histogram = any_histogram || observers.back().needs_histogram();
  }
  if (points.empty()) return observers;
  torch::jit::Module observed = with_observers(model, method, tensors);
  bool histogram_pass = false;
  const auto run_shard = [&] {
    ObserveScope scope([&](int64_t point, const at::Tensor& x) {
      auto& o = observers.at(point);
      if (!histogram_pass || o.needs_histogram()) o.observe(x);
    });
    for_each_batch(shard, [&](const Batch& batch) { run(observed, batch); });
  };

  log::info("calibration: " + std::to_string(points.size()) + " activation observers, " +
            (any_histogram ? "2 passes" : "1 pass") + " over the calibration set");
  timer.run("calibrate: ranges", run_shard, [&] {
    reduce_ranges(observers, &comm);  // every observer in one collective
  });
  // An observer that saw nothing on any rank (a layer the method never runs) has
  // no range to count a histogram over: the compile decides about its layer.
  const auto counts = [](const ActivationObserver& o) {
    return o.needs_histogram() && std::isfinite(o.observed_min()) && std::isfinite(o.observed_max());
  };
  if (std::any_of(observers.begin(), observers.end(), counts)) {
    for (auto& o : observers)
      if (counts(o)) o.begin_histogram();
    histogram_pass = true;
    timer.run("calibrate: histograms", run_shard, [&] { reduce_histograms(observers, &comm); });
  }
  return observers;
}

ActivationRange calibrated_range(const CalibrationPoint& point, const ActivationObserver& observer) {
  if (!std::isfinite(observer.observed_min()) || !std::isfinite(observer.observed_max()))
    throw ModelError(
        "layer '" + point.layer + "': no finite " + (point.output ? "output" : "input") +
        " values were observed on the calibration data "
        "(the method did not run the layer, or its inputs overflow); skip it in layer_quantization_settings");
  return observer.compute();
}

}  // namespace qforge
