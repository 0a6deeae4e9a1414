// Collectives over tensors, one interface with a backend per transport
// (MPI for CPU tensors here; NCCL for CUDA tensors on GPU machines). Code
// above this interface never knows which backend runs.
#pragma once
#include <memory>
#include <string>

namespace at {
class Tensor;
}

namespace qforge {

enum class ReduceOp { Sum, Min, Max };

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual std::string backend() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place over every rank's tensor of the same shape and dtype.
  virtual void all_reduce(at::Tensor& tensor, ReduceOp op) = 0;
  // `tensor` takes root's values on every rank.
  virtual void broadcast(at::Tensor& tensor, int root) = 0;
  // Stacks every rank's tensor (same shape everywhere): result [size, ...shape].
  virtual at::Tensor all_gather(const at::Tensor& tensor) = 0;
  virtual void barrier() = 0;
};

// The MPI backend over the world of the initialized Runtime. Tensors on a GPU
// travel through host memory (the NCCL backend avoids that).
std::unique_ptr<Communicator> make_mpi_communicator();

// The NCCL backend for ranks computing on GPU `cuda_device` (one per rank); CPU
// tensors go over MPI. Built without NCCL: the MPI backend, with a warning.
std::unique_ptr<Communicator> make_nccl_communicator(int cuda_device);

}  // namespace qforge
