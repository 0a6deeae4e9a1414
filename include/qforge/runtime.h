// The process runtime: MPI lifecycle, who this rank is, and the coordination
// that keeps a failure on one rank from leaving the others hanging.
//
// Lifecycle (see src/cli/main.cpp): Runtime::init once at start; on success
// finalize(); on an error every rank reached together (a collective phase)
// all ranks exit cleanly with the failing rank's message; on any other error
// abort(), which brings the whole job down.
#pragma once
#include <chrono>
#include <exception>
#include <functional>
#include <string>
#include <vector>

namespace qforge {

class Runtime {
 public:
  // Initializes MPI once; works without a launcher (world size 1).
  static Runtime& init(int* argc, char*** argv);
  // The initialized runtime; throws if init was not called.
  static Runtime& get();
  static bool initialized();
  // This rank, or `fallback` before init (used in error locations).
  static int global_rank_or(int fallback);

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  const std::string& host() const { return host_; }
  // Every rank's host name, in rank order.
  const std::vector<std::string>& hosts() const { return hosts_; }
  bool is_root() const { return rank_ == 0; }

  // Every collective of the runtime waits at most QFORGE_COLLECTIVE_TIMEOUT_S
  // (600 s by default), then throws LibraryError naming the ranks that no
  // longer answer (a host stopped or unreachable), instead of hanging.
  void barrier() const;
  // Every rank's text (host names, error messages), in rank order. Numbers
  // travel as tensors, through a Communicator.
  std::vector<std::string> all_gather_strings(const std::string& mine) const;

  // Who works in a collective_phase's body.
  enum class PhaseWork {
    EveryRank,
    // Rank 0 alone (writing, exporting): the others wait for it without a
    // deadline, since it is busy, not lost; its own wait, bounded, finds lost ranks.
    RootOnly,
  };
  // Runs `body` on every rank, then agrees on the outcome: if any rank threw,
  // rank 0 prints each distinct message with the ranks that raised it and
  // every rank throws PeerFailed (exit code of the first failing rank). With
  // one rank the original exception propagates unchanged. `body` must not
  // itself enter collectives, or a failing rank would leave the others in them.
  void collective_phase(const std::string& phase, const std::function<void()>& body,
                        PhaseWork work = PhaseWork::EveryRank) const;

  // Clean shutdown; only after success.
  void finalize();
  // Brings down every rank of the job with `code` (MPI_Abort).
  [[noreturn]] void abort(int code) const;

 private:
  Runtime() = default;
  // Failure agreement: every rank's exit code and message, waiting at most `timeout` (zero: no deadline).
  std::vector<long long> all_gather_int(long long mine, std::chrono::milliseconds timeout) const;
  std::vector<std::string> all_gather_strings(const std::string& mine, std::chrono::milliseconds timeout) const;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  std::string host_;
  std::vector<std::string> hosts_;
  bool finalized_ = false;
};

// The process-wide settings the qforge command runs with (a program using the
// library chooses its own): each rank's share of the host's cores as LibTorch
// threads, and TorchScript graphs run as written, without the optimizing
// executor's profiling runs (QFORGE_TORCHSCRIPT_OPTIMIZE=1 keeps it).
void use_qforge_process_settings(const Runtime& rt);

}  // namespace qforge
