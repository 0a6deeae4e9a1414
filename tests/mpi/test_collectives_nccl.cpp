// The NCCL backend on GPUs, one per rank: the same self-checking collectives
// as the MPI backend, on CUDA tensors; CPU tensors through the same
// communicator; and the watchdog turning a collective a peer never joins into
// an error instead of a hang. Skipped without GPUs (or with fewer GPUs than ranks).
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cstdlib>

#include "qforge/communicator.h"
#include "qforge/errors.h"
#include "qforge/runtime.h"

using namespace qforge;

namespace {

// Element i on rank r holds r * 1000 + i (exact in every dtype below for these sizes).
torch::Tensor pattern(int rank, int64_t n, torch::ScalarType type, const torch::Device& device) {
  return (torch::arange(n, torch::kDouble) + rank * 1000.0).to(device, type);
}

// This rank's GPU, or nullopt (with the reason) where the test cannot run.
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

}  // namespace

class NcclCollectives : public ::testing::TestWithParam<torch::ScalarType> {};

TEST_P(NcclCollectives, AllReduceBroadcastAllGatherOnGpus) {
  std::string why;
  const auto gpu = rank_gpu(&why);
  if (!gpu) GTEST_SKIP() << why;
  auto comm = make_nccl_communicator(gpu->index());
  ASSERT_EQ(comm->backend(), "nccl");
  const int w = comm->size(), r = comm->rank();
  const auto type = GetParam();
  const int64_t n = 1037;
  const auto index = torch::arange(n, torch::kDouble);

  auto sum = pattern(r, n, type, *gpu);
  comm->all_reduce(sum, ReduceOp::Sum);
  EXPECT_TRUE(sum.is_cuda());
  EXPECT_TRUE(torch::equal(sum.cpu(), (index * w + 1000.0 * w * (w - 1) / 2).to(type)));
  auto lo = pattern(r, n, type, *gpu), hi = pattern(r, n, type, *gpu);
  comm->all_reduce(lo, ReduceOp::Min);
  comm->all_reduce(hi, ReduceOp::Max);
  EXPECT_TRUE(torch::equal(lo.cpu(), pattern(0, n, type, torch::kCPU)));
  EXPECT_TRUE(torch::equal(hi.cpu(), pattern(w - 1, n, type, torch::kCPU)));

  for (int root = 0; root < w; ++root) {
    auto t = pattern(r, 333, type, *gpu);
    comm->broadcast(t, root);
    EXPECT_TRUE(torch::equal(t.cpu(), pattern(root, 333, type, torch::kCPU))) << "root " << root;
  }
  const auto all = comm->all_gather(pattern(r, 12, type, *gpu).view({3, 4}));
  ASSERT_EQ(all.sizes(), (c10::IntArrayRef{w, 3, 4}));
  for (int k = 0; k < w; ++k) EXPECT_TRUE(torch::equal(all[k].cpu(), pattern(k, 12, type, torch::kCPU).view({3, 4})));

  // A strided view is reduced in place, its neighbours untouched.
  auto base = torch::full({4, 6}, r + 1, torch::TensorOptions().dtype(type).device(*gpu));
  auto column = base.select(1, 2);
  comm->all_reduce(column, ReduceOp::Sum);
  EXPECT_TRUE(torch::all(base.select(1, 2).cpu() == w * (w + 1) / 2).item<bool>());
  EXPECT_TRUE(torch::all(base.select(1, 0).cpu() == r + 1).item<bool>());
  comm->barrier();
}

INSTANTIATE_TEST_SUITE_P(Dtypes, NcclCollectives,
                         ::testing::Values(torch::kFloat, torch::kDouble, torch::kLong, torch::kInt));

TEST(NcclCommunicator, HalfPrecisionAndCpuTensorsTravelToo) {
  std::string why;
  const auto gpu = rank_gpu(&why);
  if (!gpu) GTEST_SKIP() << why;
  auto comm = make_nccl_communicator(gpu->index());
  const double w = comm->size();
  for (auto type : {torch::kHalf, torch::kBFloat16}) {
    auto t = torch::full({64}, 1.0 + comm->rank(), torch::TensorOptions().dtype(type).device(*gpu));
    comm->all_reduce(t, ReduceOp::Sum);
    EXPECT_TRUE(torch::all(t.cpu().to(torch::kDouble) == w * (w + 1) / 2).item<bool>()) << type;
  }
  auto host = torch::full({5}, static_cast<int64_t>(comm->rank()), torch::kLong);  // metadata on the host: over MPI
  comm->all_reduce(host, ReduceOp::Max);
  EXPECT_TRUE(host.is_cpu());
  EXPECT_TRUE(torch::all(host == comm->size() - 1).item<bool>());
}

TEST(NcclCommunicator, WatchdogTurnsAMissingPeerIntoAnError) {
  std::string why;
  const auto gpu = rank_gpu(&why);
  if (!gpu) GTEST_SKIP() << why;
  const auto& rt = Runtime::get();
  if (rt.size() < 2) GTEST_SKIP() << "needs a peer";
  setenv("QFORGE_COLLECTIVE_TIMEOUT_S", "3", 1);
  auto comm = make_nccl_communicator(gpu->index());
  unsetenv("QFORGE_COLLECTIVE_TIMEOUT_S");
  auto everyone = torch::ones({16}, torch::TensorOptions().device(*gpu));
  comm->all_reduce(everyone, ReduceOp::Sum);  // all ranks together: the communicator works
  if (rt.rank() == 0) {  // the others never join this all-reduce
    auto t = torch::ones({16}, torch::TensorOptions().device(*gpu));
    try {
      comm->all_reduce(t, ReduceOp::Sum);
      ADD_FAILURE() << "an all-reduce no peer joined completed";
    } catch (const LibraryError& e) {
      EXPECT_NE(std::string(e.what()).find("did not complete within 3 s"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("rank 0"), std::string::npos) << e.what();
    }
  }
  rt.barrier();
}
