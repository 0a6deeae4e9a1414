// Which ranks still answer, asked when a collective has waited past its
// deadline: a rank that stopped, crashed or sits behind a broken link does
// not, and the timeout message names it and its host instead of "a peer".
//
// Every rank answers probes while it waits in a collective (answer_peer_probes,
// called from the communicators' wait loops), so a rank blocked in the same
// collective as the prober, or in the next one, answers; a rank computing
// outside any collective for longer than the probe's wait is reported too.
#pragma once
#include <chrono>
#include <string>
#include <vector>

namespace qforge {

// Collective over every rank: the probes' own MPI communicator (Runtime::init
// starts it and finalize stops it, so probes never mix with the job's messages).
void start_peer_probes();
void stop_peer_probes();

// Answers every probe that has arrived.
void answer_peer_probes();
// answer_peer_probes for a wait loop that started at `since`, once the wait has
// lasted 10 ms: a collective that completes sooner never pays MPI's probe, and
// a prober gives its peers far longer to answer.
void answer_peer_probes_after(std::chrono::steady_clock::time_point since);

// The ranks (not this one) that did not answer a probe within `wait`, in rank order.
std::vector<int> unresponsive_peers(std::chrono::milliseconds wait);

// "rank 2 on qf-node2, ranks 3, 5 on qf-node3": ranks grouped by host.
std::string ranks_with_hosts(const std::vector<int>& ranks, const std::vector<std::string>& hosts);

// For a collective that timed out on this rank after `timeout`: who did not
// answer a probe, who did. Peers get as long as the collective had, at most 10 s.
std::string describe_unresponsive_peers(std::chrono::milliseconds timeout);

}  // namespace qforge
