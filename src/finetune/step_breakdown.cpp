#include "finetune/step_breakdown.h"

#include <torch/cuda.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace qforge {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0.0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

StepBreakdown::StepBreakdown(int cuda_device) : cuda_device_(cuda_device) {
  const char* flag = std::getenv("QFORGE_STEP_BREAKDOWN");
  on_ = flag && std::strcmp(flag, "") != 0 && std::strcmp(flag, "0") != 0;
}

void StepBreakdown::begin_step() {
  if (!on_) return;
  if (cuda_device_ >= 0) torch::cuda::synchronize(cuda_device_);
  step_.clear();
  last_ = std::chrono::steady_clock::now();
}

void StepBreakdown::end_section(const std::string& name) {
  if (!on_) return;
  if (cuda_device_ >= 0) torch::cuda::synchronize(cuda_device_);
  const auto now = std::chrono::steady_clock::now();
  if (std::find(order_.begin(), order_.end(), name) == order_.end()) order_.push_back(name);
  step_[name] += std::chrono::duration<double>(now - last_).count();
  last_ = now;
}

void StepBreakdown::end_step() {
  if (!on_) return;
  for (const auto& name : order_) per_step_[name].push_back(step_.count(name) ? step_.at(name) : 0.0);
}

std::string StepBreakdown::summary(size_t skip) const {
  std::string text;
  for (const auto& name : order_) {
    const auto& all = per_step_.at(name);
    const size_t from = all.size() > skip ? skip : 0;
    char value[32];
    std::snprintf(value, sizeof value, "%.4f", median({all.begin() + static_cast<std::ptrdiff_t>(from), all.end()}));
    text += (text.empty() ? "" : ", ") + name + " " + value;
  }
  return text;
}

}  // namespace qforge
