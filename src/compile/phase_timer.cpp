#include "compile/phase_timer.h"

#include <ATen/ATen.h>

#include <chrono>

#include "runtime/memory_peak.h"

namespace qforge {

namespace {

CollectiveTraffic since(const CollectiveTraffic& start) {
  const CollectiveTraffic now = collective_traffic();
  return {now.calls - start.calls, now.bytes - start.bytes};
}

}  // namespace

void PhaseTimer::run(const std::string& phase, const std::function<void()>& body, const std::function<void()>& after,
                     Runtime::PhaseWork work) {
  reset_peak_memory(device_);
  const auto start = std::chrono::steady_clock::now();
  const CollectiveTraffic traffic = collective_traffic();
  runtime_.collective_phase(phase, body, work);
  if (after) after();
  record(phase, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), traffic);
}

void PhaseTimer::measure_memory_on(const c10::Device& device) {
  device_ = device;
  reset_peak_memory(device_);
}

void PhaseTimer::record(const std::string& phase, double seconds, const CollectiveTraffic& at_start) {
  local_.push_back({phase, seconds, since(at_start), peak_memory_bytes(device_)});
  reset_peak_memory(device_);
}

std::vector<PhaseTiming> PhaseTimer::gather(Communicator& comm) const {
  const auto phases = static_cast<int64_t>(local_.size());
  // Seconds and bytes in one float64 gather (bytes below 2^53 stay exact).
  at::Tensor mine = at::empty({2, phases}, at::kDouble);
  for (int64_t i = 0; i < phases; ++i) {
    mine[0][i] = local_[static_cast<size_t>(i)].seconds;
    mine[1][i] = static_cast<double>(local_[static_cast<size_t>(i)].peak_bytes);
  }
  const at::Tensor all = comm.all_gather(mine);  // [ranks, 2, phases]
  std::vector<PhaseTiming> out;
  for (int64_t i = 0; i < phases; ++i) {
    const Local& local = local_[static_cast<size_t>(i)];
    PhaseTiming row{local.phase, {}, local.traffic.calls, local.traffic.bytes, {}};
    for (int64_t r = 0; r < all.size(0); ++r) {
      row.seconds_per_rank.push_back(all[r][0][i].item<double>());
      row.peak_bytes_per_rank.push_back(static_cast<int64_t>(all[r][1][i].item<double>()));
    }
    out.push_back(row);
  }
  return out;
}

}  // namespace qforge
