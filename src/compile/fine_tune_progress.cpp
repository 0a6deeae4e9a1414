#include "compile/fine_tune_progress.h"

#include <cstdio>

#include "compile/artifacts.h"
#include "runtime/logger.h"

namespace qforge {
std::string evaluation_line(const FineTuneProgress& p) {
  return "fine-tune step " + std::to_string(p.step) + ": held-out " + evaluation_text(*p.evaluation);
}

std::string progress_line(const FineTuneProgress& p) {
  char line[200];
  std::snprintf(line, sizeof(line), "fine-tune step %lld/%lld: loss %.6g, lr %.2e, %.0f samples/s, ETA %.0f s",
                static_cast<long long>(p.step), static_cast<long long>(p.steps), p.loss, p.learning_rate,
                p.samples_per_second, p.eta_seconds);
  return line;
}

std::string progress_bar(const FineTuneProgress& p) {
  const int filled = p.steps > 0 ? static_cast<int>(30 * p.step / p.steps) : 30;
  char line[200];
  std::snprintf(line, sizeof(line), "fine-tune [%-30s] %lld/%lld loss %.4g %.0f samples/s ETA %.0f s",
                std::string(static_cast<size_t>(filled), '#').c_str(), static_cast<long long>(p.step),
                static_cast<long long>(p.steps), p.loss, p.samples_per_second, p.eta_seconds);
  return line;
}

void log_progress(const FineTuneProgress& p, int64_t log_every) {
  if (p.step % log_every == 0 || p.step == p.steps) log::info(progress_line(p));
  if (p.evaluation) log::info(evaluation_line(p));
}

}  // namespace qforge
