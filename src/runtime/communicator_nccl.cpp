// NCCL backend of Communicator: CUDA tensors travel over NCCL on the
// tensor's current CUDA stream. make_nccl_communicator pairs it with the MPI
// backend for CPU tensors (small metadata, counters).
//
// A watchdog: every collective is waited for with a deadline (the call's
// timeout, else QFORGE_COLLECTIVE_TIMEOUT_S). A peer that has
// died or stopped leaves NCCL's kernel spinning forever; past the deadline the
// communicator is aborted and the rank throws, and the error path brings the
// job down with a message instead of a hang.
//
// Each collective records an event after itself on the stream. all_reduce
// waits for its event at once; all_reduce_queued leaves the event for
// wait_queued, so that reductions called back to back are not separated by a
// host round trip each (at 1-16 MiB that round trip is as long as the
// transfer).
#include "runtime/communicator.h"

#include "qforge/errors.h"
#include "qforge_version_config.h"
#include "runtime/logger.h"
#include "runtime/peer_probe.h"

#if QFORGE_HAVE_NCCL
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <mpi.h>
#include <nccl.h>

#include <chrono>
#include <cstdlib>
#include <deque>
#include <thread>

#include "qforge/runtime.h"
#include "runtime/mpi_check.h"
#endif

namespace qforge {

#if QFORGE_HAVE_NCCL
namespace {

ncclDataType_t nccl_type(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kHalf: return ncclFloat16;
    case at::kBFloat16: return ncclBfloat16;
    case at::kLong: return ncclInt64;
    case at::kInt: return ncclInt32;
    case at::kChar: return ncclInt8;
    case at::kByte:
    case at::kBool: return ncclUint8;
    default:
      throw Error(std::string("communicator backend nccl does not support dtype ") + c10::toString(t.scalar_type()));
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return ncclSum;
    case ReduceOp::Min: return ncclMin;
    case ReduceOp::Max: return ncclMax;
  }
  return ncclSum;
}

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(int device) : device_(static_cast<c10::DeviceIndex>(device)) {
    const Runtime& rt = Runtime::get();
    c10::cuda::set_device(device_);
    // Connect every peer at init, where all ranks take part, rather than in
    // the first collective, whose blocking connect the watchdog could not see
    // (a user's NCCL_RUNTIME_CONNECT wins).
    setenv("NCCL_RUNTIME_CONNECT", "0", /*overwrite=*/0);
    ncclUniqueId id;
    if (rt.is_root()) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    QFORGE_MPI_CHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD));
    check(ncclCommInitRank(&comm_, rt.size(), id, rt.rank()), "ncclCommInitRank");
    collective_timeout({});  // a malformed QFORGE_COLLECTIVE_TIMEOUT_S fails here, not in the first collective
  }
  // Abort, not destroy: every collective has completed by now, and destroy
  // would wait on peers that may have failed (a rank leaving on an error).
  ~NcclCommunicator() override {
    if (comm_) ncclCommAbort(comm_);
  }

  std::string backend() const override { return "nccl"; }
  int rank() const override { return Runtime::get().rank(); }
  int size() const override { return Runtime::get().size(); }

  void barrier() override {
    wait_queued();
    c10::cuda::getCurrentCUDAStream(device_).synchronize();
    Runtime::get().barrier();
  }

  void wait_queued() override {
    const auto waiting_since = std::chrono::steady_clock::now();
    while (!queued_.empty()) {
      wait_for(queued_.front(), waiting_since);
      queued_.pop_front();
    }
  }

 protected:
  void reduce_all(at::Tensor& tensor, const CollectiveOptions& o) override {
    queue_reduce_all(tensor, o);
    wait_queued();
  }

  void queue_reduce_all(at::Tensor& tensor, const CollectiveOptions& o) override {
    at::Tensor work = on_this_device(tensor, "all_reduce");
    const auto stream = c10::cuda::getCurrentCUDAStream(device_);
    check(ncclAllReduce(work.data_ptr(), work.data_ptr(), static_cast<size_t>(work.numel()), nccl_type(work),
                        nccl_op(o.op), comm_, stream.stream()),
          "ncclAllReduce");
    mark_queued(stream, o, "all_reduce");
    work.record_stream(stream);  // its memory is not reused before the reduction ends, whatever stream frees it
    if (!work.is_same(tensor)) tensor.copy_(work);  // ordered after the reduction on the same stream
  }

  void broadcast_from(at::Tensor& tensor, const CollectiveOptions& o) override {
    at::Tensor work = on_this_device(tensor, "broadcast");
    const auto stream = c10::cuda::getCurrentCUDAStream(device_);
    check(ncclBroadcast(work.data_ptr(), work.data_ptr(), static_cast<size_t>(work.numel()), nccl_type(work), o.root,
                        comm_, stream.stream()),
          "ncclBroadcast");
    mark_queued(stream, o, "broadcast");
    wait_queued();
    if (!work.is_same(tensor)) tensor.copy_(work);
  }

  at::Tensor gather_all(const at::Tensor& tensor, const CollectiveOptions& o) override {
    const at::Tensor mine = on_this_device(tensor, "all_gather");
    std::vector<int64_t> shape{size()};
    for (auto d : mine.sizes()) shape.push_back(d);
    at::Tensor out = at::empty(shape, mine.options());
    const auto stream = c10::cuda::getCurrentCUDAStream(device_);
    check(ncclAllGather(mine.data_ptr(), out.data_ptr(), static_cast<size_t>(mine.numel()), nccl_type(mine), comm_,
                        stream.stream()),
          "ncclAllGather");
    mark_queued(stream, o, "all_gather");
    wait_queued();
    return out;
  }

 private:
  at::Tensor on_this_device(const at::Tensor& t, const char* what) const {
    if (!t.is_cuda() || t.device().index() != device_)
      throw Error(std::string("communicator backend nccl: ") + what + " of a tensor on " + t.device().str() +
                  ", expected cuda:" + std::to_string(device_) + " (this rank's GPU)");
    return t.is_contiguous() ? t : t.contiguous();
  }

  void check(ncclResult_t r, const char* call) {
    if (r == ncclSuccess || r == ncclInProgress) return;
    std::string detail = ncclGetErrorString(r);
    if (comm_) {
      const char* last = ncclGetLastError(comm_);
      if (last && *last) detail += " (" + std::string(last) + ")";
    }
    throw LibraryError(std::string("NCCL error in ") + call + " on rank " + std::to_string(Runtime::get().rank()) +
                       ", GPU " + std::to_string(device_) + ": " + detail);
  }

  // A collective on its way: its event completes with it (and with the work queued before it).
  struct Queued {
    at::cuda::CUDAEvent done;
    std::chrono::steady_clock::time_point deadline;
    std::chrono::milliseconds timeout;
    const char* what;
  };

  void mark_queued(const c10::cuda::CUDAStream& stream, const CollectiveOptions& o, const char* what) {
    const auto timeout = collective_timeout(o);
    queued_.push_back(Queued{at::cuda::CUDAEvent(), std::chrono::steady_clock::now() + timeout, timeout, what});
    queued_.back().done.record(stream);
    // A bound on the events held: a caller that never waits still gets its failures, a little later.
    if (queued_.size() > kMostQueued) {
      wait_for(queued_.front(), std::chrono::steady_clock::now());
      queued_.pop_front();
    }
  }

  // Waits for one collective with the watchdog's deadline; a failure aborts
  // the communicator, forgets every queued collective and throws.
  void wait_for(const Queued& q, std::chrono::steady_clock::time_point waiting_since) {
    // A collective of a few MiB completes in tens of microseconds, less than
    // one pause of the loop below: the first 2 ms only ask the event, so the
    // wait ends as soon as the collective does. The checks and the pauses that
    // leave the core to the reader threads come after.
    const auto spin_until = waiting_since + std::chrono::milliseconds(2);
    while (!q.done.query()) {
      if (std::chrono::steady_clock::now() < spin_until) continue;
      answer_peer_probes_after(waiting_since);  // a peer whose own wait timed out asks who is alive
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      const char* what = q.what;  // abort() forgets q
      const auto timeout = q.timeout;
      if (async != ncclSuccess && async != ncclInProgress) {
        abort();
        check(async, what);
      }
      if (std::chrono::steady_clock::now() > q.deadline) {
        abort();
        throw LibraryError("NCCL " + std::string(what) + " on rank " + std::to_string(Runtime::get().rank()) +
                           " did not complete within " + c10::str(static_cast<double>(timeout.count()) / 1000.0) +
                           " s (the call's timeout, else QFORGE_COLLECTIVE_TIMEOUT_S): " +
                           describe_unresponsive_peers(timeout) + "; aborting the job");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

  // After a failure nothing queued can complete; later calls fail in NCCL with a null communicator.
  void abort() {
    ncclCommAbort(comm_);
    comm_ = nullptr;
    queued_.clear();
  }

  static constexpr size_t kMostQueued = 64;
  c10::DeviceIndex device_;
  ncclComm_t comm_ = nullptr;
  std::deque<Queued> queued_;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(int cuda_device) {
  return combine_device_and_host(std::make_unique<NcclCommunicator>(cuda_device), make_mpi_communicator());
}

#else

std::unique_ptr<Communicator> make_nccl_communicator(int) {
  log::warn(
      "this qforge was built without NCCL (nccl.h not found: set NCCL_HOME and rebuild): GPU tensors travel "
      "over MPI through host memory");
  return make_mpi_communicator();
}

#endif

}  // namespace qforge
