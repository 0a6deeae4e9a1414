// Rank-count invariance: observers fed each rank's shard and reduced across
// ranks give the quantization parameters one process computes over all the
// data, bit for bit, for every observer and scheme.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "runtime/communicator.h"
#include "quant/observer.h"
#include "qforge/runtime.h"
#include "data/shard.h"

using namespace qforge;

TEST(ObserverInvariance, EveryObserverGivesTheSingleProcessResult) {
  auto comm = make_mpi_communicator();
  torch::manual_seed(7);  // the same data on every rank; each observes only its rows
  const int64_t rows = 1001;
  const auto data = torch::cat({torch::randn({rows - 1, 33}) * 2 + 0.3, torch::full({1, 33}, 25.0)});
  const auto mine = shard_rows(rows, comm->rank(), comm->size());
  for (Observer observer : {Observer::MinMax, Observer::Percentile, Observer::Entropy, Observer::Mse}) {
    for (bool symmetric : {true, false}) {
      TensorQuantSettings s;
      s.observer = observer;
      s.symmetric = symmetric;
      s.is_signed = symmetric;
      s.percentile = 99.5;
      auto run = [&](Communicator* c, int64_t begin, int64_t end, int64_t batch) {
        ActivationObserver obs(s);
        for (int pass = 0; pass < (obs.needs_histogram() ? 2 : 1); ++pass) {
          if (pass == 1) obs.begin_histogram();
          for (int64_t r = begin; r < end; r += batch) obs.observe(data.slice(0, r, std::min(end, r + batch)));
          if (pass == 0)
            obs.reduce_range(c);
          else
            obs.reduce_histogram(c);
        }
        return obs.compute();
      };
      const auto distributed = run(comm.get(), mine.begin, mine.end, 7);
      const auto single = run(nullptr, 0, rows, 64);
      const std::string what = std::string(to_string(observer)) + (symmetric ? " symmetric" : " asymmetric");
      EXPECT_EQ(distributed.lo, single.lo) << what;
      EXPECT_EQ(distributed.hi, single.hi) << what;
      EXPECT_TRUE(torch::equal(distributed.qparams.scale, single.qparams.scale)) << what;
      EXPECT_TRUE(torch::equal(distributed.qparams.zero_point, single.qparams.zero_point)) << what;
    }
  }
}
