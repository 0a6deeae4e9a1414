// Where fine-tuning steps spend their time, section by section (reading,
// teacher forward, student forward + loss + backward, all-reduce, optimizer), when
// QFORGE_STEP_BREAKDOWN=1 (jobs/benchmarks/bench_finetune.sh BREAKDOWN=1).
// The device is synchronized at each section's end so that each time is the
// section's own; that serializes host and device, so steps run slower while
// it is on. Off (the default) it costs nothing.
#pragma once
#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace qforge {

class StepBreakdown {
 public:
  explicit StepBreakdown(int cuda_device);  // -1: the CPU
  bool on() const { return on_; }
  void begin_step();
  void end_section(const std::string& name);  // the time since the last mark goes to `name`
  void end_step();
  // "name median s, ..." per step, over the steps after the first `skip` (all when there are no more).
  std::string summary(size_t skip) const;

 private:
  bool on_;
  int cuda_device_;
  std::chrono::steady_clock::time_point last_;
  std::vector<std::string> order_;                       // sections in the order first seen
  std::map<std::string, double> step_;                   // this step's seconds per section
  std::map<std::string, std::vector<double>> per_step_;  // every step's seconds per section
};

}  // namespace qforge
