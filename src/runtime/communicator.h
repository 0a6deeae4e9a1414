// Collectives over tensors, one interface with a backend per transport: MPI
// for tensors in host memory, and on GPU machines a composite whose device
// side is NCCL (CUDA tensors) and whose host side is MPI (CPU tensors), so
// code above this interface never picks a backend per tensor.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace at {
class Tensor;
}

namespace qforge {

enum class ReduceOp { Sum, Min, Max };

// How one collective runs.
struct CollectiveOptions {
  ReduceOp op = ReduceOp::Sum;  // all_reduce
  int root = 0;                 // broadcast: the rank whose values everyone takes
  // Longest wait for the collective before it counts as failed (a peer rank
  // has stopped, died or become unreachable) and throws LibraryError naming
  // the ranks that no longer answer; zero takes collective_timeout's default.
  std::chrono::milliseconds timeout{0};
};

// The wait a collective gets: the call's timeout, else QFORGE_COLLECTIVE_TIMEOUT_S
// (seconds), else 600 s. A malformed QFORGE_COLLECTIVE_TIMEOUT_S is a ConfigError.
std::chrono::milliseconds collective_timeout(const CollectiveOptions& options);

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual std::string backend() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // In place over every rank's tensor of the same shape and dtype.
  void all_reduce(at::Tensor& tensor, const CollectiveOptions& options = {});
  // `tensor` takes options.root's values on every rank.
  void broadcast(at::Tensor& tensor, const CollectiveOptions& options = {});
  // Stacks every rank's tensor (same shape everywhere): result [size, ...shape].
  at::Tensor all_gather(const at::Tensor& tensor, const CollectiveOptions& options = {});
  virtual void barrier() = 0;

  // all_reduce without the wait: on the NCCL backend the reduction is queued
  // on the tensor's current CUDA stream and the call returns at once, so
  // reductions called back to back run back to back on the GPU, and work
  // queued after them on that stream sees the sums. wait_queued() then waits
  // for all of them, each with its own deadline, and throws as all_reduce
  // would. Call it before reading the results on the host, and before
  // relying on the collectives having succeeded. Other backends complete the
  // reduction in the call.
  void all_reduce_queued(at::Tensor& tensor, const CollectiveOptions& options = {});
  virtual void wait_queued() {}

 protected:
  // The backends' collectives; the public calls above give the options their defaults.
  virtual void reduce_all(at::Tensor& tensor, const CollectiveOptions& options) = 0;
  virtual void broadcast_from(at::Tensor& tensor, const CollectiveOptions& options) = 0;
  virtual at::Tensor gather_all(const at::Tensor& tensor, const CollectiveOptions& options) = 0;
  virtual void queue_reduce_all(at::Tensor& tensor, const CollectiveOptions& options) { reduce_all(tensor, options); }
};

// What this process has passed through collectives, over every Communicator:
// calls, and payload bytes (each call's tensor as this rank contributes it).
struct CollectiveTraffic {
  int64_t calls = 0;
  int64_t bytes = 0;
};
CollectiveTraffic collective_traffic();

// The MPI backend over the world of the initialized Runtime. Tensors on a GPU
// travel through host memory (the NCCL backend avoids that).
std::unique_ptr<Communicator> make_mpi_communicator();

// One communicator over two: CUDA tensors go to `device`, all others to
// `host`; rank, size and barrier are the device side's.
std::unique_ptr<Communicator> combine_device_and_host(std::unique_ptr<Communicator> device,
                                                      std::unique_ptr<Communicator> host);

// For ranks computing on GPU `cuda_device` (one per rank): CUDA tensors over
// NCCL, CPU tensors over MPI. Built without NCCL: the MPI backend, with a warning.
std::unique_ptr<Communicator> make_nccl_communicator(int cuda_device);

}  // namespace qforge
