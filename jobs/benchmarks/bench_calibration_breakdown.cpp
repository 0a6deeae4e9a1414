// Where a calibration pass spends its time on one device, part by part, as
// qforge runs it: reading the rows from HDF5, checking them for NaN/Inf,
// copying them to the GPU, the model's plain forward, the forward with every
// min/max observer (on a GPU beside the computing stream with ReLUs and other clamps observing
// what they compute, as calibration runs them; without that fusion; and on
// the computing stream), and with every histogram observer (percentile, entropy
// and mse: ranges and histograms in one pass), the passes with reading (and
// with several reader threads), and the entropy search after it. Each part runs
// over the whole calibration set; the table gives the median of REPEATS
// runs, warm (a first run is discarded and reported as "cold").
// Usage: qforge_bench_calibration_breakdown MODEL.pt DATA.h5 BATCH [cuda|cpu] [REPEATS]
#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "data/batches.h"
#include "data/dataset.h"
#include "graph/fake_quant_graph.h"
#include "graph/model.h"
#include "graph/observe_op.h"
#include "quant/observer.h"
#include "runtime/side_stream.h"

namespace {

using namespace qforge;

struct Timing {
  double cold = 0;
  std::vector<double> warm;
  double median() const {
    std::vector<double> s = warm;
    std::sort(s.begin(), s.end());
    return s.empty() ? 0 : s[s.size() / 2];
  }
};

void synchronize(const c10::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

Timing time_runs(const std::function<void()>& body, const c10::Device& device, int repeats) {
  Timing t;
  for (int r = 0; r <= repeats; ++r) {
    synchronize(device);
    const auto start = std::chrono::steady_clock::now();
    body();
    synchronize(device);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (r == 0)
      t.cold = s;
    else
      t.warm.push_back(s);
  }
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s MODEL.pt DATA.h5 BATCH [cuda|cpu] [REPEATS]\n", argv[0]);
    return 2;
  }
  const std::string model_path = argv[1], data_path = argv[2];
  const int64_t batch_size = std::stoll(argv[3]);
  const bool gpu = (argc < 5 || std::string(argv[4]) == "cuda") && torch::cuda::is_available();
  const int repeats = argc > 5 ? std::stoi(argv[5]) : 3;
  const c10::Device device = gpu ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  torch::jit::setGraphExecutorOptimize(false);  // qforge's default: graphs run as written
  torch::NoGradGuard no_grad;

  Model model = Model::load(model_path);
  model.module().eval();
  move_module(model.module(), device);
  std::vector<ObservedTensor> points;
  for (const auto& layer : model.layers())
    if (layer.quantizable) points.push_back({layer.name, false});
  const DatasetInfo info = inspect_dataset({data_path});
  const CallBinding binding = model.bind(info, {});
  ShardSource source{info, RowRange{0, info.total_rows()}, {}};
  source.options.batch_size = batch_size;

  // The batches resident on the device: the parts below that do not read.
  std::vector<Batch> resident;
  for_each_batch(source, [&](const Batch& b) { resident.push_back(to_device(b, device)); });
  const auto forward_all = [&](torch::jit::Module& m) {
    for (const auto& b : resident) run_module(m, "forward", binding, b, model_path);
  };

  TensorQuantSettings minmax, histogram;
  histogram.observer = Observer::Percentile;
  std::vector<int64_t> served_by;  // layers reading one tensor observe it once, as in calibrate()
  // As calibrate() observes: ReLUs and other clamps observe what they compute (fuse_observations.h).
  torch::jit::Module observed =
      with_observers(model.module(), "forward", points, &served_by, ObserveFusion::IntoClamps);
  torch::jit::Module observed_apart = with_observers(model.module(), "forward", points);
  size_t distinct = 0;
  for (size_t k = 0; k < served_by.size(); ++k) distinct += served_by[k] == static_cast<int64_t>(k);
  std::vector<ActivationObserver> observers;
  const auto fresh_observers = [&](const TensorQuantSettings& s) {
    observers.assign(points.size(), ActivationObserver(s));
  };
  // The observed model over what `sweep` runs it on, as calibrate() observes:
  // on a GPU beside the computing stream, or (`inline_observers`) on it.
  bool inline_observers = false;
  const auto observe_over = [&](const std::function<void()>& sweep) {
    SideStream beside(inline_observers ? c10::Device(c10::kCPU) : device);
    ObserveScope scope(ObservationSink([&](const Observation& o) {
      beside.run(
          o.tensors(), [&] { observers[o.point].observe(o.x, o.partial_extrema); }, o.written_later);
    }));
    sweep();
    beside.join();
    reduce_ranges(observers, nullptr);  // folds the pending device values: part of the pass
    for (size_t k = 0; k < observers.size(); ++k)
      if (served_by[k] >= 0 && served_by[k] != static_cast<int64_t>(k))
        observers[k].take_statistics(observers[static_cast<size_t>(served_by[k])]);
  };
  bool fused = true;  // false: every observer reduces its tensor apart
  const auto observe_all = [&] { observe_over([&] { forward_all(fused ? observed : observed_apart); }); };

  std::vector<std::pair<std::string, Timing>> rows;
  // qforge's reading: one reader thread (SampleReaderOptions), onto the GPU
  // when there is one; and, against it, several.
  const int readers = SampleReaderOptions().readers, several = 3;
  const auto reading = [&](bool check, int cuda, int threads) {
    ShardSource s = source;
    s.options.check_finite = check;
    s.options.cuda_device = cuda;
    s.options.readers = threads;
    return s;
  };
  const auto read_with = [&](bool check, int cuda, int threads) {
    return [s = reading(check, cuda, threads)] { for_each_batch(s, [](const Batch&) {}); };
  };
  rows.emplace_back("read rows (HDF5 into host memory), 1 thread", time_runs(read_with(false, -1, 1), device, repeats));
  rows.emplace_back("read + NaN/Inf check, 1 thread", time_runs(read_with(true, -1, 1), device, repeats));
  if (gpu) {
    rows.emplace_back("read + check + copy to the GPU, 1 thread", time_runs(read_with(true, 0, 1), device, repeats));
    rows.emplace_back("read + check + copy to the GPU, " + std::to_string(several) + " threads",
                      time_runs(read_with(true, 0, several), device, repeats));
  }
  rows.emplace_back("forward, data resident", time_runs([&] { forward_all(model.module()); }, device, repeats));
  const auto observe_resident = [&](const TensorQuantSettings& s) {
    return [&, s] {
      fresh_observers(s);
      observe_all();
      reduce_histograms(observers, nullptr);  // nothing for min/max observers
    };
  };
  rows.emplace_back("forward + min/max observers, resident", time_runs(observe_resident(minmax), device, repeats));
  if (gpu) {
    fused = false;
    rows.emplace_back("forward + min/max observers, resident, each reducing its tensor apart",
                      time_runs(observe_resident(minmax), device, repeats));
    fused = true;
    inline_observers = true;
    rows.emplace_back("forward + min/max observers, resident, on the computing stream",
                      time_runs(observe_resident(minmax), device, repeats));
    inline_observers = false;
  }
  rows.emplace_back("forward + histogram observers, resident", time_runs(observe_resident(histogram), device, repeats));
  const auto read_and_observe = [&](const TensorQuantSettings& s, int threads) {
    return [&, s, threads] {
      fresh_observers(s);
      observe_over([&] {
        for_each_batch(reading(true, gpu ? 0 : -1, threads),
                       [&](const Batch& b) { run_module(observed, "forward", binding, b, model_path); });
      });
      reduce_histograms(observers, nullptr);
    };
  };
  rows.emplace_back("min/max pass as qforge runs it (reading included)",
                    time_runs(read_and_observe(minmax, readers), device, repeats));
  if (gpu)
    rows.emplace_back("min/max pass, " + std::to_string(several) + " reader threads",
                      time_runs(read_and_observe(minmax, several), device, repeats));
  rows.emplace_back("histogram pass as qforge runs it (reading included)",
                    time_runs(read_and_observe(histogram, readers), device, repeats));
  // After the pass: the entropy search of every observer, on the host.
  TensorQuantSettings entropy = histogram;
  entropy.observer = Observer::Entropy;
  read_and_observe(entropy, readers)();
  const auto search_all = [&] {
    for (const auto& o : observers)
      if (std::isfinite(o.observed_min())) o.compute();  // a layer the data never reached has no range
  };
  rows.emplace_back("entropy thresholds of every observer (search only)", time_runs(search_all, device, repeats));

  const int64_t samples = info.total_rows();
  std::printf(
      "- %s, %lld samples, batch %lld, %zu observed layer inputs (%zu distinct tensors), %s; median of %d warm "
      "runs\n\n",
      model_path.c_str(), static_cast<long long>(samples), static_cast<long long>(batch_size), points.size(), distinct,
      gpu ? "GPU 0" : "CPU", repeats);
  std::printf("| part | warm s | samples/s | cold s | warm runs (s) |\n| --- | ---: | ---: | ---: | --- |\n");
  for (const auto& [name, t] : rows) {
    std::string runs;
    for (double s : t.warm) runs += (runs.empty() ? "" : ", ") + std::to_string(s).substr(0, 6);
    std::printf("| %s | %.3f | %.0f | %.3f | %s |\n", name.c_str(), t.median(), samples / t.median(), t.cold,
                runs.c_str());
  }
  return 0;
}
