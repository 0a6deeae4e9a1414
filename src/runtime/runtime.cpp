#include "qforge/runtime.h"

#include <mpi.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <memory>
#include <utility>

#include "qforge/errors.h"
#include "runtime/mpi_check.h"
#include "runtime/communicator.h"
#include "runtime/mpi_wait.h"
#include "runtime/peer_probe.h"

namespace qforge {
namespace {
Runtime* g_runtime = nullptr;
}

Runtime& Runtime::init(int* argc, char*** argv) {
  if (g_runtime) return *g_runtime;
  int already = 0;
  MPI_Initialized(&already);
  if (!already) {
    // FUNNELED: only the main thread calls MPI (the HDF5 prefetch thread never does).
    int provided = 0;
    QFORGE_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
  }
  // Errors come back as codes so QFORGE_MPI_CHECK can report them with context.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  static Runtime runtime;
  QFORGE_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &runtime.rank_));
  QFORGE_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &runtime.size_));
  MPI_Comm node_comm;
  QFORGE_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, runtime.rank_, MPI_INFO_NULL, &node_comm));
  QFORGE_MPI_CHECK(MPI_Comm_rank(node_comm, &runtime.local_rank_));
  QFORGE_MPI_CHECK(MPI_Comm_size(node_comm, &runtime.local_size_));
  MPI_Comm_free(&node_comm);
  char name[MPI_MAX_PROCESSOR_NAME] = "";
  int len = 0;
  MPI_Get_processor_name(name, &len);
  runtime.host_.assign(name, static_cast<size_t>(len));
  runtime.hosts_ = runtime.all_gather_strings(runtime.host_, std::chrono::milliseconds(0));  // start-up: no deadline
  start_peer_probes();
  g_runtime = &runtime;
  return runtime;
}

Runtime& Runtime::get() {
  if (!g_runtime) throw Error("qforge::Runtime::get() before Runtime::init()");
  return *g_runtime;
}

bool Runtime::initialized() { return g_runtime != nullptr; }

int Runtime::global_rank_or(int fallback) { return g_runtime ? g_runtime->rank_ : fallback; }

void Runtime::barrier() const {
  MPI_Request request;
  QFORGE_MPI_CHECK(MPI_Ibarrier(MPI_COMM_WORLD, &request));
  wait_for_collective(request, collective_timeout({}), "barrier", nullptr);
}

std::vector<std::string> Runtime::all_gather_strings(const std::string& mine) const {
  return all_gather_strings(mine, collective_timeout({}));
}

std::vector<std::string> Runtime::all_gather_strings(const std::string& mine, std::chrono::milliseconds timeout) const {
  struct Buffers {  // MPI reads and writes them until the call completes
    std::string mine, all;
    int length = 0;
    std::vector<int> lengths, offsets;
  };
  auto b = std::make_shared<Buffers>();
  b->mine = mine;
  b->length = static_cast<int>(mine.size());
  b->lengths.resize(size_);
  b->offsets.resize(size_);
  MPI_Request request;
  QFORGE_MPI_CHECK(MPI_Iallgather(&b->length, 1, MPI_INT, b->lengths.data(), 1, MPI_INT, MPI_COMM_WORLD, &request));
  wait_for_collective(request, timeout, "all_gather (text lengths)", b);
  int total = 0;
  for (int r = 0; r < size_; ++r) {
    b->offsets[r] = total;
    total += b->lengths[r];
  }
  b->all.assign(static_cast<size_t>(total), '\0');
  QFORGE_MPI_CHECK(MPI_Iallgatherv(b->mine.data(), b->length, MPI_CHAR, b->all.data(), b->lengths.data(),
                                   b->offsets.data(), MPI_CHAR, MPI_COMM_WORLD, &request));
  wait_for_collective(request, timeout, "all_gather (text)", b);
  std::vector<std::string> out;
  for (int r = 0; r < size_; ++r) out.push_back(b->all.substr(b->offsets[r], b->lengths[r]));
  return out;
}

std::vector<long long> Runtime::all_gather_int(long long mine, std::chrono::milliseconds timeout) const {
  auto buffers = std::make_shared<std::pair<long long, std::vector<long long>>>(mine, std::vector<long long>(size_));
  MPI_Request request;
  QFORGE_MPI_CHECK(MPI_Iallgather(&buffers->first, 1, MPI_LONG_LONG, buffers->second.data(), 1, MPI_LONG_LONG,
                                  MPI_COMM_WORLD, &request));
  wait_for_collective(request, timeout, "all_gather (phase outcome)", buffers);
  return buffers->second;
}

void Runtime::collective_phase(const std::string& phase, const std::function<void()>& body, PhaseWork work) const {
  std::exception_ptr error;
  int code = 0;
  std::string message;
  try {
    body();
  } catch (const Error& e) {
    error = std::current_exception();
    code = e.exit_code();
    message = e.what();
  } catch (const std::exception& e) {
    error = std::current_exception();
    code = kExitFailure;
    message = e.what();
  }
  if (size_ == 1) {
    if (error) std::rethrow_exception(error);
    return;
  }
  // Every rank reaches this point, failed or not: agree on the outcome.
  // Waiting for rank 0's work alone has no deadline; rank 0's wait has one.
  const auto timeout =
      work == PhaseWork::RootOnly && rank_ != 0 ? std::chrono::milliseconds(0) : collective_timeout({});
  const auto codes = all_gather_int(code, timeout);
  const auto first_failed = std::find_if(codes.begin(), codes.end(), [](long long c) { return c != 0; });
  if (first_failed == codes.end()) return;
  const auto messages = all_gather_strings(message, collective_timeout({}));
  if (rank_ == 0) {
    std::map<std::string, std::vector<int>> ranks_by_message;  // print each distinct error once
    for (int r = 0; r < size_; ++r)
      if (codes[r] != 0) ranks_by_message[messages[r]].push_back(r);
    for (const auto& [text, ranks] : ranks_by_message) {
      std::string list;
      for (int r : ranks) list += (list.empty() ? "" : ",") + std::to_string(r);
      std::cerr << "qforge: error (" << phase << ", rank" << (ranks.size() > 1 ? "s " : " ") << list << "): " << text
                << std::endl;
    }
  }
  throw PeerFailed(phase + " failed on rank " + std::to_string(first_failed - codes.begin()),
                   static_cast<int>(*first_failed));
}

void Runtime::finalize() {
  if (finalized_) return;
  finalized_ = true;
  int done = 0;
  MPI_Finalized(&done);
  if (done) return;
  stop_peer_probes();
  MPI_Finalize();
}

void Runtime::abort(int code) const {
  MPI_Abort(MPI_COMM_WORLD, code == 0 ? 1 : code);
  std::abort();
}

}  // namespace qforge
