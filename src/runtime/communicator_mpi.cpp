// MPI backend of Communicator: CPU tensors, in place where MPI allows. Every
// collective is MPI's non-blocking form, waited for until its deadline
// (collective_timeout; runtime/mpi_wait.h).
#include <mpi.h>

#include <climits>
#include <cstdlib>
#include <memory>
#include <vector>

#include "qforge/runtime.h"
#include "runtime/communicator.h"
#include "runtime/mpi_check.h"
#include "runtime/mpi_wait.h"

namespace qforge {
namespace {

// `moved_only`: broadcast and gather move elements without combining them, so
// 16-bit floats (which MPI has no type for) travel as their bits.
MPI_Datatype mpi_type(const at::Tensor& t, bool moved_only = false) {
  switch (t.scalar_type()) {
    case at::kBFloat16:
    case at::kHalf:
      if (moved_only) return MPI_UINT16_T;
      throw Error(std::string("communicator backend mpi does not support reducing dtype ") +
                  c10::toString(t.scalar_type()));
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kLong: return MPI_INT64_T;
    case at::kInt: return MPI_INT32_T;
    case at::kShort: return MPI_INT16_T;
    case at::kChar: return MPI_INT8_T;
    case at::kByte: return MPI_UINT8_T;
    case at::kBool: return MPI_C_BOOL;
    default:
      throw Error(std::string("communicator backend mpi does not support dtype ") + c10::toString(t.scalar_type()));
  }
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return MPI_SUM;
    case ReduceOp::Min: return MPI_MIN;
    case ReduceOp::Max: return MPI_MAX;
  }
  return MPI_SUM;
}

// The contiguous host tensor MPI works on: the tensor itself where it can be,
// else a copy (non-contiguous, or on a GPU without the NCCL backend).
at::Tensor host_buffer(const at::Tensor& t) {
  if (!t.is_cpu()) return t.to(at::kCPU).contiguous();
  return t.is_contiguous() ? t : t.contiguous();
}

// MPI counts are int: large tensors travel in pieces of at most this many
// elements. QFORGE_MPI_CHUNK_ELEMENTS lowers it, so tests run the chunked path
// on small tensors.
int64_t max_chunk_elements() {
  constexpr int64_t kLimit = INT_MAX / 8;
  const char* hook = std::getenv("QFORGE_MPI_CHUNK_ELEMENTS");
  if (!hook) return kLimit;
  const long long value = std::atoll(hook);
  return value > 0 && value < kLimit ? value : kLimit;
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(int64_t chunk) : chunk_(chunk) {}

  std::string backend() const override { return "mpi"; }
  int rank() const override { return Runtime::get().rank(); }
  int size() const override { return Runtime::get().size(); }
  void barrier() override { Runtime::get().barrier(); }

 protected:
  void reduce_all(at::Tensor& tensor, const CollectiveOptions& o) override {
    at::Tensor work = host_buffer(tensor);
    auto* bytes = static_cast<char*>(work.data_ptr());
    const MPI_Datatype type = mpi_type(work);
    const int64_t element = static_cast<int64_t>(work.element_size());
    for (int64_t offset = 0; offset < work.numel(); offset += chunk_) {
      const int count = static_cast<int>(std::min<int64_t>(chunk_, work.numel() - offset));
      void* piece = bytes + offset * element;
      MPI_Request request;
      QFORGE_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, piece, count, type, mpi_op(o.op), MPI_COMM_WORLD, &request));
      wait(request, o, "all_reduce", {work});
    }
    if (!work.is_same(tensor)) tensor.copy_(work);
  }

  void broadcast_from(at::Tensor& tensor, const CollectiveOptions& o) override {
    at::Tensor work = host_buffer(tensor);
    auto* bytes = static_cast<char*>(work.data_ptr());
    const int64_t element = static_cast<int64_t>(work.element_size());
    for (int64_t offset = 0; offset < work.numel(); offset += chunk_) {
      const int count = static_cast<int>(std::min<int64_t>(chunk_, work.numel() - offset));
      void* piece = bytes + offset * element;
      MPI_Request request;
      QFORGE_MPI_CHECK(MPI_Ibcast(piece, count, mpi_type(work, true), o.root, MPI_COMM_WORLD, &request));
      wait(request, o, "broadcast", {work});
    }
    if (!work.is_same(tensor)) tensor.copy_(work);
  }

  at::Tensor gather_all(const at::Tensor& tensor, const CollectiveOptions& o) override {
    const at::Tensor mine = host_buffer(tensor).reshape({-1});
    const int64_t n = mine.numel();
    at::Tensor out = at::empty({size(), n}, mine.options());
    for (int64_t offset = 0; offset < n; offset += chunk_) {
      const int count = static_cast<int>(std::min<int64_t>(chunk_, n - offset));
      const at::Tensor piece = mine.narrow(0, offset, count).contiguous();
      at::Tensor gathered = at::empty({size(), count}, mine.options());
      const MPI_Datatype type = mpi_type(mine, true);
      MPI_Request request;
      QFORGE_MPI_CHECK(
          MPI_Iallgather(piece.data_ptr(), count, type, gathered.data_ptr(), count, type, MPI_COMM_WORLD, &request));
      wait(request, o, "all_gather", {piece, gathered});
      out.narrow(1, offset, count).copy_(gathered);
    }
    std::vector<int64_t> shape{size()};
    for (auto d : tensor.sizes()) shape.push_back(d);
    return out.view(shape).to(tensor.device());
  }

 private:
  void wait(MPI_Request& request, const CollectiveOptions& o, const char* what, std::vector<at::Tensor> buffers) {
    wait_for_collective(request, collective_timeout(o), what,
                        std::make_shared<const std::vector<at::Tensor>>(std::move(buffers)));
  }

  int64_t chunk_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator() {
  Runtime::get();  // must be initialized
  return std::make_unique<MpiCommunicator>(max_chunk_elements());
}

}  // namespace qforge
