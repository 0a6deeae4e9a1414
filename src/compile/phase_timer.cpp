#include "compile/phase_timer.h"

#include <ATen/ATen.h>

#include <chrono>

namespace qforge {

namespace {

CollectiveTraffic since(const CollectiveTraffic& start) {
  const CollectiveTraffic now = collective_traffic();
  return {now.calls - start.calls, now.bytes - start.bytes};
}

}  // namespace

void PhaseTimer::run(const std::string& phase, const std::function<void()>& body, const std::function<void()>& after,
                     Runtime::PhaseWork work) {
  const auto start = std::chrono::steady_clock::now();
  const CollectiveTraffic traffic = collective_traffic();
  runtime_.collective_phase(phase, body, work);
  if (after) after();
  record(phase, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), traffic);
}

void PhaseTimer::record(const std::string& phase, double seconds, const CollectiveTraffic& at_start) {
  local_.push_back({phase, seconds, since(at_start)});
}

std::vector<PhaseTiming> PhaseTimer::gather(Communicator& comm) const {
  at::Tensor mine = at::empty({static_cast<int64_t>(local_.size())}, at::kDouble);
  for (size_t i = 0; i < local_.size(); ++i) mine[static_cast<int64_t>(i)] = local_[i].seconds;
  const at::Tensor all = comm.all_gather(mine);  // [ranks, phases]
  std::vector<PhaseTiming> out;
  for (size_t i = 0; i < local_.size(); ++i) {
    PhaseTiming row{local_[i].phase, {}, local_[i].traffic.calls, local_[i].traffic.bytes};
    for (int64_t r = 0; r < all.size(0); ++r)
      row.seconds_per_rank.push_back(all[r][static_cast<int64_t>(i)].item<double>());
    out.push_back(row);
  }
  return out;
}

}  // namespace qforge
