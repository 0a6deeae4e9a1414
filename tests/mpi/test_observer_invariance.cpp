// Rank-count invariance: observers fed each rank's shard and reduced across
// ranks (every observer of a pass in one collective) give the quantization
// parameters one process computes over all the data, bit for bit, for every
// observer and scheme.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "data/shard.h"
#include "qforge/runtime.h"
#include "quant/observer.h"
#include "runtime/communicator.h"

using namespace qforge;

namespace {

std::vector<TensorQuantSettings> every_observer_and_scheme() {
  std::vector<TensorQuantSettings> out;
  for (Observer observer : {Observer::MinMax, Observer::Percentile, Observer::Entropy, Observer::Mse})
    for (bool symmetric : {true, false}) {
      TensorQuantSettings s;
      s.observer = observer;
      s.symmetric = symmetric;
      s.is_signed = symmetric;
      s.percentile = 99.5;
      out.push_back(s);
    }
  return out;
}

// Observer i sees column block i of the rows [begin, end), in batches of `batch`.
std::vector<ActivationRange> calibrate(const std::vector<TensorQuantSettings>& settings, const at::Tensor& data,
                                       Communicator* comm, int64_t begin, int64_t end, int64_t batch) {
  std::vector<ActivationObserver> observers(settings.begin(), settings.end());
  for (size_t i = 0; i < observers.size(); ++i) {
    const at::Tensor block = data.select(1, static_cast<int64_t>(i));
    for (int64_t r = begin; r < end; r += batch) observers[i].observe(block.slice(0, r, std::min(end, r + batch)));
  }
  reduce_ranges(observers, comm);
  reduce_histograms(observers, comm);
  std::vector<ActivationRange> out;
  for (const auto& o : observers) out.push_back(o.compute());
  return out;
}

}  // namespace

TEST(ObserverInvariance, EveryObserverGivesTheSingleProcessResult) {
  auto comm = make_mpi_communicator();
  torch::manual_seed(7);  // the same data on every rank; each observes only its rows
  const int64_t rows = 1001;
  const auto settings = every_observer_and_scheme();
  const int64_t n = static_cast<int64_t>(settings.size());
  // Per observer a block of 33 values per row, each block with its own offset and an outlier row.
  const auto data = torch::cat(
      {torch::randn({rows - 1, n, 33}) * 2 + torch::arange(n).view({1, n, 1}) * 0.3, torch::full({1, n, 33}, 25.0)});
  const auto mine = shard_rows(rows, comm->rank(), comm->size());
  const auto distributed = calibrate(settings, data, comm.get(), mine.begin, mine.end, 7);
  const auto single = calibrate(settings, data, nullptr, 0, rows, 64);
  for (size_t i = 0; i < settings.size(); ++i) {
    const std::string what =
        std::string(to_string(settings[i].observer)) + (settings[i].symmetric ? " symmetric" : " asymmetric");
    EXPECT_EQ(distributed[i].lo, single[i].lo) << what;
    EXPECT_EQ(distributed[i].hi, single[i].hi) << what;
    EXPECT_TRUE(torch::equal(distributed[i].qparams.scale, single[i].qparams.scale)) << what;
    EXPECT_TRUE(torch::equal(distributed[i].qparams.zero_point, single[i].qparams.zero_point)) << what;
  }
}
