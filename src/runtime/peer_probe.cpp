// Probes travel on their own duplicate of MPI_COMM_WORLD: a probe is a
// one-int message with tag kProbe carrying the prober's round, its answer an
// empty message tagged with that round, so an answer that comes too late for
// one round is never taken for an answer to the next.
#include "runtime/peer_probe.h"

#include <mpi.h>

#include <algorithm>
#include <map>
#include <thread>

#include "qforge/runtime.h"
#include "runtime/mpi_check.h"

namespace qforge {
namespace {

constexpr int kProbe = 1;
constexpr int kFirstAnswerTag = 2;  // answer tags: kFirstAnswerTag + round, below MPI's guaranteed 32767
constexpr int kRounds = 30000;
constexpr std::chrono::milliseconds kLongestProbeWait{10000};
constexpr std::chrono::milliseconds kQuietWait{10};  // waits shorter than this do not answer probes
MPI_Comm g_probes = MPI_COMM_NULL;
int g_round = 0;
std::vector<int> g_round_numbers;  // a probe's payload, alive until the sends complete on their own

// Starts a send that is never waited on: MPI completes it on its own.
void send_and_forget(const int* payload, int count, int to, int tag) {
  MPI_Request request;
  if (MPI_Isend(payload, count, MPI_INT, to, tag, g_probes, &request) == MPI_SUCCESS) MPI_Request_free(&request);
}

std::string join(const std::vector<int>& ranks) {
  std::string text;
  for (int r : ranks) text += (text.empty() ? "" : ", ") + std::to_string(r);
  return text;
}

}  // namespace

void start_peer_probes() {
  if (g_probes == MPI_COMM_NULL) QFORGE_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &g_probes));
}

void stop_peer_probes() {
  if (g_probes != MPI_COMM_NULL) MPI_Comm_free(&g_probes);
}

void answer_peer_probes() {
  if (g_probes == MPI_COMM_NULL) return;
  for (;;) {
    int arrived = 0;
    MPI_Status status;
    if (MPI_Iprobe(MPI_ANY_SOURCE, kProbe, g_probes, &arrived, &status) != MPI_SUCCESS || !arrived) return;
    int round = 0;
    MPI_Recv(&round, 1, MPI_INT, status.MPI_SOURCE, kProbe, g_probes, MPI_STATUS_IGNORE);
    send_and_forget(nullptr, 0, status.MPI_SOURCE, kFirstAnswerTag + round % kRounds);
  }
}

void answer_peer_probes_after(std::chrono::steady_clock::time_point since) {
  if (std::chrono::steady_clock::now() - since >= kQuietWait) answer_peer_probes();
}

std::vector<int> unresponsive_peers(std::chrono::milliseconds wait) {
  if (g_probes == MPI_COMM_NULL) return {};
  int me = 0, size = 1;
  MPI_Comm_rank(g_probes, &me);
  MPI_Comm_size(g_probes, &size);
  if (g_round_numbers.empty()) g_round_numbers.resize(kRounds);
  const int round = g_round++ % kRounds;
  g_round_numbers[round] = round;
  std::vector<MPI_Request> pending(static_cast<size_t>(size), MPI_REQUEST_NULL);
  for (int r = 0; r < size; ++r) {
    if (r == me) continue;
    MPI_Irecv(nullptr, 0, MPI_INT, r, kFirstAnswerTag + round, g_probes, &pending[r]);
    send_and_forget(&g_round_numbers[round], 1, r, kProbe);
  }
  const auto deadline = std::chrono::steady_clock::now() + wait;
  auto open = [&] {
    return std::any_of(pending.begin(), pending.end(), [](MPI_Request q) { return q != MPI_REQUEST_NULL; });
  };
  while (open() && std::chrono::steady_clock::now() < deadline) {
    answer_peer_probes();  // peers that time out too probe us at the same time
    for (auto& request : pending) {
      int done = 0;
      if (request != MPI_REQUEST_NULL) MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::vector<int> silent;
  for (int r = 0; r < size; ++r) {
    if (pending[r] == MPI_REQUEST_NULL) continue;
    silent.push_back(r);
    MPI_Cancel(&pending[r]);
    MPI_Request_free(&pending[r]);
  }
  return silent;
}

std::string ranks_with_hosts(const std::vector<int>& ranks, const std::vector<std::string>& hosts) {
  std::vector<std::string> order;  // hosts in the order their first rank appears
  std::map<std::string, std::vector<int>> by_host;
  for (int r : ranks) {
    const std::string host = r < static_cast<int>(hosts.size()) ? hosts[r] : "?";
    if (by_host[host].empty()) order.push_back(host);
    by_host[host].push_back(r);
  }
  std::string text;
  for (const auto& host : order) {
    const auto& on_host = by_host[host];
    text += (text.empty() ? "" : ", ") + std::string(on_host.size() > 1 ? "ranks " : "rank ") + join(on_host) + " on " +
            host;
  }
  return text;
}

std::string describe_unresponsive_peers(std::chrono::milliseconds timeout) {
  if (g_probes == MPI_COMM_NULL) return "";
  const Runtime& rt = Runtime::get();
  const std::vector<int> silent = unresponsive_peers(std::min<std::chrono::milliseconds>(timeout, kLongestProbeWait));
  if (silent.empty())
    return "every other rank answers (they wait in another collective, or compute longer than the timeout)";
  std::vector<int> answered;
  for (int r = 0; r < rt.size(); ++r)
    if (r != rt.rank() && !std::binary_search(silent.begin(), silent.end(), r)) answered.push_back(r);
  std::string text =
      "no answer from " + ranks_with_hosts(silent, rt.hosts()) + " (stopped, crashed, or unreachable over the network)";
  if (!answered.empty()) text += "; " + ranks_with_hosts(answered, rt.hosts()) + " answered";
  return text;
}

}  // namespace qforge
