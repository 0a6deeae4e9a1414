#include "runtime/mpi_wait.h"

#include <sstream>
#include <thread>
#include <vector>

#include "qforge/errors.h"
#include "qforge/runtime.h"
#include "runtime/mpi_check.h"
#include "runtime/peer_probe.h"

namespace qforge {
namespace {

std::string seconds_text(std::chrono::milliseconds wait) {
  std::ostringstream text;
  text << static_cast<double>(wait.count()) / 1000.0 << " s";
  return text.str();
}

}  // namespace

void wait_for_collective(MPI_Request& request, std::chrono::milliseconds timeout, const std::string& what,
                         std::shared_ptr<const void> buffers) {
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + timeout;
  for (int done = 0;;) {
    QFORGE_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    if (done) return;
    answer_peer_probes_after(start);
    if (timeout.count() > 0 && std::chrono::steady_clock::now() > deadline) {
      static std::vector<std::shared_ptr<const void>> abandoned;  // never freed: MPI may write them until the end
      abandoned.push_back(std::move(buffers));
      const Runtime& rt = Runtime::get();
      throw LibraryError(
          "MPI " + what + " on rank " + std::to_string(rt.rank()) + " (" + rt.host() + ") did not complete within " +
          seconds_text(timeout) +
          " (the call's timeout, else QFORGE_COLLECTIVE_TIMEOUT_S): " + describe_unresponsive_peers(timeout));
    }
    std::this_thread::yield();
  }
}

}  // namespace qforge
