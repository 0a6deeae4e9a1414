// Self-checking collectives: deterministic per-rank inputs with closed-form
// expected results; any wrong element fails.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "qforge/communicator.h"
#include "qforge/errors.h"
#include "qforge/runtime.h"

using namespace qforge;

namespace {
// Element i on rank r holds r * 1000 + i (exact in float for these sizes).
torch::Tensor pattern(int rank, int64_t n, torch::ScalarType type) {
  return (torch::arange(n, torch::kDouble) + rank * 1000.0).to(type);
}
}  // namespace

class Collectives : public ::testing::TestWithParam<torch::ScalarType> {};

TEST_P(Collectives, AllReduceSumMinMax) {
  auto comm = make_mpi_communicator();
  const int w = comm->size(), r = comm->rank();
  const int64_t n = 1037;  // not a multiple of anything convenient
  const auto index = torch::arange(n, torch::kDouble);
  auto sum = pattern(r, n, GetParam());
  comm->all_reduce(sum, ReduceOp::Sum);
  // sum_r (r*1000 + i) = 1000 * w(w-1)/2 + w*i
  const auto expected_sum = (index * w + 1000.0 * w * (w - 1) / 2).to(GetParam());
  EXPECT_TRUE(torch::equal(sum, expected_sum));
  auto lo = pattern(r, n, GetParam());
  comm->all_reduce(lo, ReduceOp::Min);
  EXPECT_TRUE(torch::equal(lo, pattern(0, n, GetParam())));
  auto hi = pattern(r, n, GetParam());
  comm->all_reduce(hi, ReduceOp::Max);
  EXPECT_TRUE(torch::equal(hi, pattern(w - 1, n, GetParam())));
}

TEST_P(Collectives, BroadcastFromEveryRoot) {
  auto comm = make_mpi_communicator();
  for (int root = 0; root < comm->size(); ++root) {
    auto t = pattern(comm->rank(), 333, GetParam());
    comm->broadcast(t, root);
    EXPECT_TRUE(torch::equal(t, pattern(root, 333, GetParam()))) << "root " << root;
  }
}

TEST_P(Collectives, AllGatherStacksRanksInOrder) {
  auto comm = make_mpi_communicator();
  const auto mine = pattern(comm->rank(), 12, GetParam()).view({3, 4});
  const auto all = comm->all_gather(mine);
  ASSERT_EQ(all.sizes(), (c10::IntArrayRef{comm->size(), 3, 4}));
  for (int r = 0; r < comm->size(); ++r) EXPECT_TRUE(torch::equal(all[r], pattern(r, 12, GetParam()).view({3, 4})));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, Collectives,
                         ::testing::Values(torch::kFloat, torch::kDouble, torch::kLong, torch::kInt));

TEST(CollectivesMpi, NonContiguousTensorIsReducedInPlace) {
  auto comm = make_mpi_communicator();
  auto base = torch::full({4, 6}, static_cast<double>(comm->rank() + 1), torch::kDouble);
  auto column = base.select(1, 2);  // a strided view
  ASSERT_FALSE(column.is_contiguous());
  comm->all_reduce(column, ReduceOp::Sum);
  const double w = comm->size();
  EXPECT_TRUE(torch::all(base.select(1, 2) == w * (w + 1) / 2).item<bool>());
  EXPECT_TRUE(torch::all(base.select(1, 0) == comm->rank() + 1).item<bool>());  // untouched
}

TEST(CollectivesMpi, UnsupportedDtypeNamesTheBackend) {
  auto comm = make_mpi_communicator();
  auto half = torch::ones({4}, torch::kHalf);
  try {
    comm->all_reduce(half, ReduceOp::Sum);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("backend mpi does not support"), std::string::npos);
  }
}

TEST(Runtime, MetadataCollectives) {
  const auto& rt = Runtime::get();
  const auto names = rt.all_gather_strings("rank-" + std::to_string(rt.rank()));
  ASSERT_EQ(static_cast<int>(names.size()), rt.size());
  for (int r = 0; r < rt.size(); ++r) EXPECT_EQ(names[r], "rank-" + std::to_string(r));
  EXPECT_EQ(rt.broadcast_string(rt.is_root() ? "from root" : "", 0), "from root");
  EXPECT_GE(rt.local_rank(), 0);
  EXPECT_LT(rt.local_rank(), rt.local_size());
}

TEST(Runtime, FailureOnOneRankReachesEveryRank) {
  const auto& rt = Runtime::get();
  const int failing = rt.size() - 1;
  try {
    rt.collective_phase("test", [&] {
      if (rt.rank() == failing) throw DataError("bad row on the last rank");
    });
    FAIL() << "every rank must learn of the failure";
  } catch (const PeerFailed& e) {
    EXPECT_GT(rt.size(), 1);
    EXPECT_EQ(e.exit_code(), kExitData);
    EXPECT_NE(std::string(e.what()).find("rank " + std::to_string(failing)), std::string::npos);
  } catch (const DataError& e) {
    EXPECT_EQ(rt.size(), 1);  // one rank: the original error
  }
  // and a phase where nobody fails passes everywhere
  EXPECT_NO_THROW(rt.collective_phase("ok", [] {}));
}
