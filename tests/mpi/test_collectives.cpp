// Self-checking collectives over both backends: deterministic per-rank inputs
// with closed-form expected results; any wrong element fails. The NCCL cases
// skip themselves without a GPU per rank.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <thread>

#include "qforge/errors.h"
#include "qforge/runtime.h"
#include "runtime/communicator.h"
#include "runtime/peer_probe.h"

using namespace qforge;

namespace {

// One collective case in the style of nccl-tests: a backend, a dtype and an
// element count. Counts cross the MPI backend's chunk boundary, lowered to
// kTestChunk elements by its test hook, so the chunked path runs too.
struct Case {
  std::string backend;  // "Mpi" or "Nccl"
  torch::ScalarType type;
  int64_t n;
};
constexpr int64_t kTestChunk = 1000;

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return info.param.backend + "_" + c10::toString(info.param.type) + "_" + std::to_string(info.param.n);
}

std::vector<Case> cases() {
  std::vector<Case> out;
  const std::vector<int64_t> counts{1, 999, 1000, 1001, 2 * kTestChunk + 37};
  // MPI: what the host backend carries; NCCL: its own types (no int16), half precision too.
  for (auto type :
       {torch::kFloat, torch::kDouble, torch::kLong, torch::kInt, torch::kShort, torch::kChar, torch::kByte})
    for (auto n : counts) out.push_back({"Mpi", type, n});
  for (auto type : {torch::kFloat, torch::kDouble, torch::kLong, torch::kInt, torch::kChar, torch::kByte, torch::kHalf,
                    torch::kBFloat16})
    for (auto n : counts) out.push_back({"Nccl", type, n});
  return out;
}

// This rank's GPU, or nullopt (with the reason) where an NCCL case cannot run.
std::optional<torch::Device> rank_gpu(std::string* why) {
  const auto& rt = Runtime::get();
  if (!torch::cuda::is_available()) {
    *why = "no GPU";
    return std::nullopt;
  }
  const int gpus = static_cast<int>(torch::cuda::device_count());
  if (rt.local_size() > gpus) {
    *why = std::to_string(rt.local_size()) + " ranks on a host with " + std::to_string(gpus) + " GPU(s)";
    return std::nullopt;
  }
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(rt.local_rank()));
}

// Element i on rank r holds (i mod 7) + r: exact in every dtype, and so are
// the sums of up to 4 ranks (at most 30, within int8).
torch::Tensor pattern(int rank, int64_t n, torch::ScalarType type, const torch::Device& device = torch::kCPU) {
  return (torch::arange(n, torch::kLong).remainder(7) + rank).to(device, type);
}

}  // namespace

class Collectives : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (GetParam().backend == "Mpi") {
      setenv("QFORGE_MPI_CHUNK_ELEMENTS", std::to_string(kTestChunk).c_str(), 1);
      comm_ = make_mpi_communicator();
      unsetenv("QFORGE_MPI_CHUNK_ELEMENTS");
      return;
    }
    std::string why;
    const auto gpu = rank_gpu(&why);
    if (!gpu) GTEST_SKIP() << why;
    device_ = *gpu;
    comm_ = make_nccl_communicator(gpu->index());
    ASSERT_EQ(comm_->backend(), "nccl");
  }
  torch::Tensor mine(int rank) const { return pattern(rank, GetParam().n, GetParam().type, device_); }
  torch::Tensor expected(const torch::Tensor& exact) const { return exact.to(GetParam().type); }

  std::unique_ptr<Communicator> comm_;
  torch::Device device_ = torch::kCPU;
};

TEST_P(Collectives, AllReduceSumMinMax) {
  const int w = comm_->size(), r = comm_->rank();
  const auto base = torch::arange(GetParam().n, torch::kLong).remainder(7);
  auto sum = mine(r), lo = mine(r), hi = mine(r);
  comm_->all_reduce(sum);
  comm_->all_reduce(lo, {ReduceOp::Min});
  comm_->all_reduce(hi, {ReduceOp::Max});
  EXPECT_EQ(sum.device(), device_);
  EXPECT_TRUE(torch::equal(sum.cpu(), expected(base * w + w * (w - 1) / 2)));
  EXPECT_TRUE(torch::equal(lo.cpu(), expected(base)));
  EXPECT_TRUE(torch::equal(hi.cpu(), expected(base + (w - 1))));
}

// Reductions queued back to back, a strided view among them, give all_reduce's
// results once waited for, whatever runs between them on the stream.
TEST_P(Collectives, QueuedReductionsEqualWaitedOnes) {
  const int w = comm_->size(), r = comm_->rank();
  const auto base = torch::arange(GetParam().n, torch::kLong).remainder(7);
  auto sum = mine(r), hi = mine(r);
  auto wide = torch::stack({mine(r), mine(r)}, 1);  // [n, 2]
  auto column = wide.select(1, 1);
  comm_->all_reduce_queued(sum);
  comm_->all_reduce_queued(hi, {ReduceOp::Max});
  comm_->all_reduce_queued(column);
  sum.add_(1);  // queued after the reduction: sees its result
  comm_->wait_queued();
  EXPECT_TRUE(torch::equal(sum.cpu(), expected(base * w + w * (w - 1) / 2 + 1)));
  EXPECT_TRUE(torch::equal(hi.cpu(), expected(base + (w - 1))));
  EXPECT_TRUE(torch::equal(wide.select(1, 1).cpu(), expected(base * w + w * (w - 1) / 2)));
  EXPECT_TRUE(torch::equal(wide.select(1, 0).cpu(), expected(base + r)));
}

TEST_P(Collectives, BroadcastFromEveryRoot) {
  for (int root = 0; root < comm_->size(); ++root) {
    auto t = mine(comm_->rank());
    comm_->broadcast(t, {ReduceOp::Sum, root});
    EXPECT_TRUE(torch::equal(t.cpu(), pattern(root, GetParam().n, GetParam().type))) << "root " << root;
  }
}

TEST_P(Collectives, AllGatherStacksRanksInOrder) {
  const auto all = comm_->all_gather(mine(comm_->rank()));
  ASSERT_EQ(all.sizes(), (c10::IntArrayRef{comm_->size(), GetParam().n}));
  for (int r = 0; r < comm_->size(); ++r)
    EXPECT_TRUE(torch::equal(all[r].cpu(), pattern(r, GetParam().n, GetParam().type))) << "rank " << r;
}

INSTANTIATE_TEST_SUITE_P(Backends, Collectives, ::testing::ValuesIn(cases()), case_name);

TEST(CollectivesMpi, NonContiguousTensorIsReducedInPlace) {
  auto comm = make_mpi_communicator();
  auto base = torch::full({4, 6}, static_cast<double>(comm->rank() + 1), torch::kDouble);
  auto column = base.select(1, 2);  // a strided view
  ASSERT_FALSE(column.is_contiguous());
  comm->all_reduce(column);
  const double w = comm->size();
  EXPECT_TRUE(torch::all(base.select(1, 2) == w * (w + 1) / 2).item<bool>());
  EXPECT_TRUE(torch::all(base.select(1, 0) == comm->rank() + 1).item<bool>());  // untouched
}

TEST(CollectivesMpi, UnsupportedDtypeNamesTheBackend) {
  auto comm = make_mpi_communicator();
  auto half = torch::ones({4}, torch::kHalf);
  try {
    comm->all_reduce(half);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("backend mpi does not support"), std::string::npos);
  }
}

TEST(CollectivesMpi, TimeoutTurnsALatePeerIntoAnErrorNamingIt) {
  auto comm = make_mpi_communicator();
  if (comm->size() < 2) GTEST_SKIP() << "needs a peer";
  const auto& rt = Runtime::get();
  auto t = torch::ones({8}, torch::kDouble);
  CollectiveOptions within;
  if (comm->rank() == 0) {  // gives up before the others join, one second late
    within.timeout = std::chrono::milliseconds(200);
    try {
      comm->all_reduce(t, within);
      ADD_FAILURE() << "an all-reduce no peer had joined completed";
    } catch (const LibraryError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("all_reduce on rank 0 (" + rt.host() + ") did not complete within 0.2 s"), std::string::npos)
          << what;
      // The peers sleep outside any collective, so none answers the probe.
      std::vector<int> peers;
      for (int r = 1; r < rt.size(); ++r) peers.push_back(r);
      EXPECT_NE(what.find("no answer from " + ranks_with_hosts(peers, rt.hosts())), std::string::npos) << what;
    }
  } else {
    within.timeout = std::chrono::milliseconds(20000);
    std::this_thread::sleep_for(std::chrono::seconds(1));
    comm->all_reduce(t, within);  // completes the collective rank 0 gave up on
  }
  comm->barrier();
  auto after = torch::ones({8}, torch::kDouble);
  comm->all_reduce(after);  // the communicator still works
  EXPECT_TRUE(torch::all(after == comm->size()).item<bool>());
}

TEST(CollectivesMpi, PeersInACollectiveAnswerProbes) {
  auto comm = make_mpi_communicator();
  if (comm->size() < 2) GTEST_SKIP() << "needs a peer";
  auto t = torch::ones({4}, torch::kLong);
  if (comm->rank() == 0) {
    // Everyone else waits in the all-reduce below, answering probes.
    EXPECT_TRUE(unresponsive_peers(std::chrono::seconds(20)).empty());
  }
  comm->all_reduce(t);
  EXPECT_TRUE(torch::all(t == comm->size()).item<bool>());
}

TEST(PeerProbe, RanksAreGroupedByHost) {
  EXPECT_EQ(ranks_with_hosts({2, 3, 5}, {"a", "a", "b", "b", "c", "b"}), "ranks 2, 3, 5 on b");
  EXPECT_EQ(ranks_with_hosts({0, 4}, {"a", "a", "b", "b", "c"}), "rank 0 on a, rank 4 on c");
}

TEST(Runtime, MetadataCollectives) {
  const auto& rt = Runtime::get();
  const auto names = rt.all_gather_strings("rank-" + std::to_string(rt.rank()));
  ASSERT_EQ(static_cast<int>(names.size()), rt.size());
  for (int r = 0; r < rt.size(); ++r) EXPECT_EQ(names[r], "rank-" + std::to_string(r));
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

TEST(Runtime, PhaseAgreementHasADeadlineExceptWhileRankZeroWorksAlone) {
  const auto& rt = Runtime::get();
  if (rt.size() < 2) GTEST_SKIP() << "needs a peer";
  setenv("QFORGE_COLLECTIVE_TIMEOUT_S", "0.5", 1);
  const auto nap = [] { std::this_thread::sleep_for(std::chrono::seconds(3)); };
  rt.barrier();
  // Rank 0 writing alone for longer than the deadline: the others wait for it.
  EXPECT_NO_THROW(rt.collective_phase(
      "write",
      [&] {
        if (rt.is_root()) nap();
      },
      Runtime::PhaseWork::RootOnly));
  // A phase of every rank: the others give up on the rank that does not come, and name it.
  const int late = rt.size() - 1;
  try {
    rt.collective_phase("calibrate", [&] {
      if (rt.rank() == late) nap();
    });
    EXPECT_EQ(rt.rank(), late) << "the others waited past the deadline";
  } catch (const LibraryError& e) {
    const std::string what = e.what();
    EXPECT_NE(rt.rank(), late);
    EXPECT_NE(what.find("did not complete within 0.5 s"), std::string::npos) << what;
    EXPECT_NE(what.find("no answer from " + ranks_with_hosts({late}, rt.hosts())), std::string::npos) << what;
  }
  unsetenv("QFORGE_COLLECTIVE_TIMEOUT_S");
  rt.barrier();
}

// The NCCL backend beyond what both backends share: strided views and CPU tensors
// through the same communicator, and the watchdog turning a collective a peer
// never joins into an error instead of a hang.
TEST(NcclCommunicator, StridedViewsAndCpuTensorsTravelToo) {
  std::string why;
  const auto gpu = rank_gpu(&why);
  if (!gpu) GTEST_SKIP() << why;
  auto comm = make_nccl_communicator(gpu->index());
  const int w = comm->size(), r = comm->rank();
  // A strided view is reduced in place, its neighbours untouched.
  auto base = torch::full({4, 6}, r + 1, torch::TensorOptions().dtype(torch::kFloat).device(*gpu));
  auto column = base.select(1, 2);
  comm->all_reduce(column);
  EXPECT_TRUE(torch::all(base.select(1, 2).cpu() == w * (w + 1) / 2).item<bool>());
  EXPECT_TRUE(torch::all(base.select(1, 0).cpu() == r + 1).item<bool>());
  auto host = torch::full({5}, static_cast<int64_t>(comm->rank()), torch::kLong);  // metadata on the host: over MPI
  comm->all_reduce(host, {ReduceOp::Max});
  EXPECT_TRUE(host.is_cpu());
  EXPECT_TRUE(torch::all(host == comm->size() - 1).item<bool>());
}

namespace {

// Rank 0 starts an all-reduce (waited for at once, or queued and waited for
// later) that the others never join: its wait ends in an error, not a hang.
void expect_watchdog_error(bool queued) {
  std::string why;
  const auto gpu = rank_gpu(&why);
  if (!gpu) GTEST_SKIP() << why;
  const auto& rt = Runtime::get();
  if (rt.size() < 2) GTEST_SKIP() << "needs a peer";
  auto comm = make_nccl_communicator(gpu->index());
  auto everyone = torch::ones({16}, torch::TensorOptions().device(*gpu));
  comm->all_reduce(everyone);  // all ranks together: the communicator works
  if (rt.rank() == 0) {        // the others never join this all-reduce
    auto t = torch::ones({1 << 20}, torch::TensorOptions().device(*gpu));
    setenv("QFORGE_COLLECTIVE_TIMEOUT_S", "3", 1);  // the default wait, read by every collective
    try {
      if (queued) {
        comm->all_reduce_queued(t);
        comm->wait_queued();
      } else {
        comm->all_reduce(t);
      }
      ADD_FAILURE() << "an all-reduce no peer joined completed";
    } catch (const LibraryError& e) {
      EXPECT_NE(std::string(e.what()).find("all_reduce on rank 0 did not complete within 3 s"), std::string::npos)
          << e.what();
    }
    unsetenv("QFORGE_COLLECTIVE_TIMEOUT_S");
  }
  rt.barrier();
}

}  // namespace

TEST(NcclCommunicator, WatchdogTurnsAMissingPeerIntoAnError) { expect_watchdog_error(/*queued=*/false); }

TEST(NcclCommunicator, WatchdogFindsAQueuedReductionNoPeerJoined) { expect_watchdog_error(/*queued=*/true); }
