#include "cli/progress_printer.h"

#include <cstdio>

#include "compile/fine_tune_progress.h"
#include "runtime/logger.h"

namespace qforge::cli {

ProgressPrinter::ProgressPrinter(bool is_root, bool users_terminal, int64_t log_every)
    : is_root_(is_root), bar_(is_root && users_terminal), log_every_(log_every) {}

ProgressPrinter::~ProgressPrinter() {
  if (bar_open_) std::printf("\n");
}

void ProgressPrinter::operator()(const FineTuneProgress& p) {
  if (!is_root_) return;
  if (!bar_) return log_progress(p, log_every_);
  std::printf("\r%s", progress_bar(p).c_str());
  bar_open_ = p.step < p.steps && !p.evaluation;
  if (!bar_open_) std::printf("\n");  // the last step, or an evaluation's line below the bar
  std::fflush(stdout);
  log::debug(progress_line(p));  // the bar shows it; the rank log keeps it
  if (p.evaluation) log::info(evaluation_line(p));
}

}  // namespace qforge::cli
