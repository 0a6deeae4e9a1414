#include "compile/phase_timer.h"

#include <chrono>
#include <cstdio>
#include <sstream>

namespace qforge {

void PhaseTimer::run(const std::string& phase, const std::function<void()>& body, const std::function<void()>& after) {
  const auto start = std::chrono::steady_clock::now();
  runtime_.collective_phase(phase, body);
  if (after) after();
  local_.emplace_back(phase, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

std::vector<PhaseTiming> PhaseTimer::gather() const {
  std::string mine;
  for (const auto& [phase, seconds] : local_) {
    char text[64];
    std::snprintf(text, sizeof(text), "%.6f ", seconds);
    mine += text;
  }
  const auto all = runtime_.all_gather_strings(mine);  // every rank ran the same phases, in order
  std::vector<PhaseTiming> out;
  for (const auto& [phase, seconds] : local_) out.push_back({phase, {}});
  for (const auto& text : all) {
    std::istringstream in(text);
    for (auto& row : out) {
      double s = 0;
      in >> s;
      row.seconds_per_rank.push_back(s);
    }
  }
  return out;
}

}  // namespace qforge
