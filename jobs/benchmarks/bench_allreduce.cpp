// Bus bandwidth of qforge's Communicator all-reduce (the gradient path of
// fine-tuning) over a range of sizes, as nccl-tests reports it:
//   busbw = bytes * 2 (n - 1) / n / time.
// One rank per GPU with the NCCL backend (the MPI backend on CPU ranks), each
// call waited for (all_reduce) and calls queued back to back with one wait at
// the end (all_reduce_queued, as fine-tuning's gradient buckets travel).
// Usage: mpirun -np N qforge_bench_allreduce [--cpu]   -> a table on rank 0's stdout
#include <torch/cuda.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstring>

#include "qforge/runtime.h"
#include "runtime/communicator.h"

int main(int argc, char** argv) {
  auto& rt = qforge::Runtime::init(&argc, &argv);
  const bool gpu = torch::cuda::is_available() && !(argc > 1 && std::strcmp(argv[1], "--cpu") == 0);
  const torch::Device device =
      gpu ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(rt.local_rank())) : torch::Device(torch::kCPU);
  auto comm = gpu ? qforge::make_nccl_communicator(device.index()) : qforge::make_mpi_communicator();
  const double n = rt.size();
  if (rt.is_root()) {
    std::printf(
        "| bytes | float32 elements | time us (each waited) | busbw GB/s (each waited) | time us (queued) | busbw GB/s "
        "(queued) |\n| ---: | ---: | ---: | ---: | ---: | ---: |\n");
  }
  const double bus_factor = 2 * (n - 1) / n;
  int wrong = 0;
  for (int64_t bytes = 1 << 20; bytes <= (int64_t{1} << 28); bytes *= 4) {
    // What is timed is checked, both ways: rank r contributes r + 1 everywhere, the sum is n(n+1)/2.
    auto waited = torch::full({bytes / 4}, rt.rank() + 1.0, torch::TensorOptions().device(device));
    auto queued = waited.clone();
    comm->all_reduce(waited);
    comm->all_reduce_queued(queued);
    comm->wait_queued();
    for (const auto* t : {&waited, &queued}) {
      if (!torch::all(*t == n * (n + 1) / 2).item<bool>()) {
        std::fprintf(stderr, "rank %d: all-reduce of %lld bytes gave a wrong sum\n", rt.rank(),
                     static_cast<long long>(bytes));
        wrong = 1;
      }
    }
    auto t = torch::rand({bytes / 4}, torch::TensorOptions().device(device));
    const int iterations = bytes >= (int64_t{1} << 26) ? 20 : 50;
    for (int i = 0; i < 5; ++i) comm->all_reduce(t);  // warm-up: connections, buffers
    const auto seconds_per_call = [&](bool each_waited) {
      comm->barrier();
      const auto start = std::chrono::steady_clock::now();
      for (int i = 0; i < iterations; ++i) each_waited ? comm->all_reduce(t) : comm->all_reduce_queued(t);
      comm->wait_queued();
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / iterations;
    };
    const double waited_s = seconds_per_call(true), queued_s = seconds_per_call(false);
    if (rt.is_root()) {
      const double b = static_cast<double>(bytes) / 1e9 * bus_factor;
      std::printf("| %lld | %lld | %.1f | %.1f | %.1f | %.1f |\n", static_cast<long long>(bytes),
                  static_cast<long long>(bytes / 4), waited_s * 1e6, b / waited_s, queued_s * 1e6, b / queued_s);
    }
  }
  comm.reset();
  rt.finalize();
  return wrong;
}
