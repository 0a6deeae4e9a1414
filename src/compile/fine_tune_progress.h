// The fine-tuning's progress as text: a plain line for logs, files and pipes,
// a bar for a terminal to redraw in place, and the evaluation's line.
#pragma once
#include <string>

#include "qforge/compile.h"

namespace qforge {

// "fine-tune step 30/100: loss 0.0123, lr 1.00e-03, 812 samples/s, ETA 9 s"
std::string progress_line(const FineTuneProgress& p);
// "fine-tune [#########                     ] 30/100 loss 0.0123 812 samples/s ETA 9 s"
std::string progress_bar(const FineTuneProgress& p);

// "fine-tune step 30: held-out top-1 agreement 99.10%, output SQNR 31.2 dB" (p.evaluation must be set)
std::string evaluation_line(const FineTuneProgress& p);

// What the compile reports without a progress callback: rank 0's log (and
// console) gets the line every `log_every` steps and after the last, and
// every held-out evaluation.
void log_progress(const FineTuneProgress& p, int64_t log_every);

}  // namespace qforge
