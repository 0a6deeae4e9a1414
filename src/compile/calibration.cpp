#include "compile/calibration.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "graph/fake_quant_graph.h"
#include "graph/observe_op.h"
#include "quant/gptq.h"
#include "qforge/errors.h"
#include "runtime/logger.h"
#include "runtime/side_stream.h"

namespace qforge {

namespace {

bool observed_finite(const ActivationObserver& o) {
  return std::isfinite(o.observed_min()) && std::isfinite(o.observed_max());
}

// One fixed-point XᵀX per point that asks for one and saw values, on the grid
// its reduced range and vector count fix.
std::vector<std::optional<HessianSum>> hessian_sums(const std::vector<CalibrationPoint>& points,
                                                    const std::vector<ActivationObserver>& observers,
                                                    const at::Tensor& vectors, const std::vector<int64_t>& inputs,
                                                    const c10::Device& device) {
  std::vector<std::optional<HessianSum>> sums(points.size());
  for (size_t k = 0; k < points.size(); ++k) {
    const int64_t n = vectors[static_cast<int64_t>(k)].item<int64_t>();
    if (!points[k].hessian || n == 0 || !observed_finite(observers[k])) continue;
    const double max_abs = std::max(std::abs(observers[k].observed_min()), std::abs(observers[k].observed_max()));
    sums[k].emplace(inputs[k], max_abs, n, device);
  }
  return sums;
}

// Points whose tensors another point's ops observe (graph/fake_quant_graph.h).
struct SharedTensors {
  // Per point: the point whose statistics it takes at the end, or -1. Such a
  // point gathers the same statistics with no Hessian: it observes nothing.
  std::vector<int64_t> copy_of;
  // Per point: the points that observe its tensors with statistics of their own.
  std::vector<std::vector<int64_t>> observed_apart;
};

SharedTensors share_tensors(const std::vector<CalibrationPoint>& points,
                            const std::vector<ActivationObserver>& observers, const std::vector<int64_t>& served_by) {
  SharedTensors shared{std::vector<int64_t>(points.size(), -1), std::vector<std::vector<int64_t>>(points.size())};
  for (size_t k = 0; k < points.size(); ++k) {
    const int64_t first = served_by[k];
    if (first < 0 || first == static_cast<int64_t>(k)) continue;
    if (!points[k].hessian && observers[k].gathers_like(observers[static_cast<size_t>(first)]))
      shared.copy_of[k] = first;
    else
      shared.observed_apart[static_cast<size_t>(first)].push_back(static_cast<int64_t>(k));
  }
  return shared;
}

}  // namespace

CalibrationStatistics calibrate(const torch::jit::Module& model, const std::string& method,
                                const std::vector<CalibrationPoint>& points, const ForwardFn& run,
                                const ShardSource& shard, Communicator& comm, PhaseTimer& timer,
                                const std::string& phase) {
  // The sums live where the batches arrive, the same kind of device on every rank.
  const c10::Device device =
      shard.options.cuda_device >= 0 ? c10::Device(c10::kCUDA, shard.options.cuda_device) : c10::Device(c10::kCPU);
  const Sweep sweep = [&](torch::jit::Module& observed) {
    for_each_batch(shard, [&](const Batch& batch) { run(observed, batch); });
  };
  return calibrate(model, method, points, sweep, device, comm, timer, phase);
}

CalibrationStatistics calibrate(const torch::jit::Module& model, const std::string& method,
                                const std::vector<CalibrationPoint>& points, const Sweep& sweep,
                                const c10::Device& device, Communicator& comm, PhaseTimer& timer,
                                const std::string& phase) {
  CalibrationStatistics stats;
  auto& observers = stats.observers;
  std::vector<ObservedTensor> tensors;
  bool any_histogram = false, any_hessian = false;
  for (const auto& p : points) {
    observers.emplace_back(p.settings);
    tensors.push_back({p.layer, p.output});
    any_histogram = any_histogram || observers.back().needs_histogram();
    any_hessian = any_hessian || p.hessian;
  }
  stats.hessians.resize(points.size());
  if (points.empty()) return stats;
  std::vector<int64_t> served_by;
  torch::jit::Module observed = with_observers(model, method, tensors, &served_by, ObserveFusion::IntoClamps);
  const SharedTensors shared = share_tensors(points, observers, served_by);
  // Pass 1 counts each Hessian point's input vectors (the grid of its sums needs the total).
  at::Tensor vectors = at::zeros({static_cast<int64_t>(points.size())}, at::kLong);
  std::vector<int64_t> inputs(points.size(), 0);
  std::vector<std::optional<HessianSum>> sums(points.size());
  bool second_pass = false;
  const auto take = [&](int64_t point, const at::Tensor& x, const at::Tensor& partial_extrema) {
    if (second_pass) {
      if (sums[point]) sums[point]->add(x);
      return;
    }
    observers.at(point).observe(x, partial_extrema);
    if (points[point].hessian && x.dim() > 0 && x.size(-1) > 0) {
      vectors[point] += x.numel() / x.size(-1);
      inputs[point] = x.size(-1);
    }
  };
  // On a GPU the observers run beside the model's compute (side_stream.h).
  SideStream beside(device);
  const auto run_shard = [&] {
    ObserveScope scope(ObservationSink([&](const Observation& o) {
      const auto take_all = [&] {
        take(o.point, o.x, o.partial_extrema);
        for (int64_t other : shared.observed_apart[static_cast<size_t>(o.point)]) take(other, o.x, o.partial_extrema);
      };
      beside.run(o.tensors(), take_all, o.written_later);
    }));
    sweep(observed);
    beside.join();
  };
  const auto copy_shared = [&] {
    for (size_t k = 0; k < points.size(); ++k)
      if (shared.copy_of[k] >= 0) observers[k].take_statistics(observers[static_cast<size_t>(shared.copy_of[k])]);
  };

  // "calibration: ..." marks the activation calibration in the logs (tests and users wait for it).
  log::info(std::string("calibration") + (phase == "calibrate" ? "" : " for " + phase) + ": " +
            std::to_string(points.size()) + (any_hessian ? " layer inputs, " : " activation observers, ") +
            (any_hessian ? "2 passes" : "1 pass") + " over the calibration set");
  timer.run(phase + ": ranges", run_shard, [&] {
    reduce_ranges(observers, &comm);  // every observer in one collective
    // Then every histogram on the grid of its reduced range (an observer
    // that saw nothing on any rank, a layer the method never runs, has none).
    if (any_histogram) reduce_histograms(observers, &comm);
    if (any_hessian) {
      comm.all_reduce(vectors);
      // Every rank agrees on the inputs' width (a rank may have seen none of them).
      at::Tensor width = at::tensor(inputs, at::kLong);
      comm.all_reduce(width, {ReduceOp::Max});
      for (size_t k = 0; k < inputs.size(); ++k) inputs[k] = width[static_cast<int64_t>(k)].item<int64_t>();
    }
  });
  if (any_hessian) sums = hessian_sums(points, observers, vectors, inputs, device);
  if (std::none_of(sums.begin(), sums.end(), [](const auto& s) { return s.has_value(); })) {
    copy_shared();
    return stats;
  }
  second_pass = true;
  timer.run(phase + ": Hessians", run_shard, [&] {
    for (auto& s : sums)
      if (s) comm.all_reduce_queued(s->sums());  // int64: exact in any order; back to back, one wait
    comm.wait_queued();
    for (size_t k = 0; k < sums.size(); ++k)
      if (sums[k]) stats.hessians[k] = sums[k]->hessian();
  });
  copy_shared();
  return stats;
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
