// The command line's fine-tuning progress on rank 0: a bar redrawn in place
// when standard output is the user's terminal, plain lines every log_every
// steps otherwise (a file, a pipe, or the pseudo-terminal mpirun gives every
// rank whatever its own output is).
#pragma once
#include <cstdint>

#include "qforge/compile.h"

namespace qforge::cli {

class ProgressPrinter {
 public:
  ProgressPrinter(bool is_root, bool users_terminal, int64_t log_every);
  ~ProgressPrinter();  // ends a bar left unfinished (a run stopped early)
  ProgressPrinter(const ProgressPrinter&) = delete;
  ProgressPrinter& operator=(const ProgressPrinter&) = delete;
  void operator()(const FineTuneProgress& p);

 private:
  bool is_root_;
  bool bar_;
  int64_t log_every_;
  bool bar_open_ = false;  // the bar's line is not ended yet
};

}  // namespace qforge::cli
