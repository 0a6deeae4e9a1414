// Collective phases with their wall time on this rank, gathered at the end
// into one row per phase with every rank's seconds and peak memory (for the
// report), and the collective traffic of each phase.
#pragma once
#include <c10/core/Device.h>

#include <functional>
#include <string>
#include <vector>

#include "qforge/compile.h"
#include "qforge/runtime.h"
#include "runtime/communicator.h"

namespace qforge {

class PhaseTimer {
 public:
  explicit PhaseTimer(const Runtime& runtime) : runtime_(runtime) {}
  // Where the phases' peak memory is measured from now on (the CPU until set).
  void measure_memory_on(const c10::Device& device);
  // Runtime::collective_phase, timed; time spent in `after` (the collectives
  // that follow the phase, e.g. reductions) is counted in the phase.
  void run(const std::string& phase, const std::function<void()>& body, const std::function<void()>& after = {},
           Runtime::PhaseWork work = Runtime::PhaseWork::EveryRank);
  // A phase timed by its owner (e.g. a loop of many collective steps), with
  // the collective traffic when it started; its peak memory is the most held
  // since the previous phase ended.
  void record(const std::string& phase, double seconds, const CollectiveTraffic& at_start);
  // Collective: every rank's seconds and peak memory per phase (every rank ran the same phases, in order).
  std::vector<PhaseTiming> gather(Communicator& comm) const;

 private:
  struct Local {
    std::string phase;
    double seconds;
    CollectiveTraffic traffic;  // this phase's
    int64_t peak_bytes;
  };
  const Runtime& runtime_;
  c10::Device device_ = c10::Device(c10::kCPU);
  std::vector<Local> local_;
};

}  // namespace qforge
