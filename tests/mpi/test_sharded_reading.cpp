// Every rank reads only its shard; together the shards cover every sample
// exactly once, with the same values a single reader sees.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "../unit/test_helpers.h"
#include "data/sample_reader.h"
#include "qforge/runtime.h"
#include "runtime/communicator.h"

using namespace qforge;

TEST(ShardedReading, ShardsCoverEverySampleExactlyOnce) {
  auto comm = make_mpi_communicator();
  for (const char* file : {"images.h5", "text_tuple.h5"}) {
    const auto info = inspect_dataset({test::asset(file)});
    const int64_t total = info.total_rows();
    const auto mine = shard_rows(total, comm->rank(), comm->size());
    const auto reference = read_all(info, {0, total}, total);  // one batch per group, read locally
    std::vector<int64_t> group_start{0};
    for (const auto& g : info.groups) group_start.push_back(group_start.back() + g.rows);

    auto seen = torch::zeros({total}, torch::kLong);
    SampleReader reader(info, mine, {3, 2, true, {}});
    while (auto batch = reader.next()) {
      for (int64_t i = 0; i < batch->rows(); ++i) seen[batch->global_begin + i] += 1;
      const int64_t local = batch->global_begin - group_start[batch->group];
      for (size_t k = 0; k < batch->inputs.size(); ++k)
        EXPECT_TRUE(
            torch::equal(batch->inputs[k], reference[batch->group].inputs[k].slice(0, local, local + batch->rows())))
            << file << " rows from " << batch->global_begin;
    }
    comm->all_reduce(seen);
    EXPECT_TRUE(torch::all(seen == 1).item<bool>()) << file << ": some sample was read zero or several times";
  }
}
