// Stopping early on request: SLURM sends a signal before a job's time ends
// (sbatch --signal) and SIGTERM before preemption; a user may send either.
// The handlers only record the signal. Fine-tuning asks at every step
// boundary whether any rank got one (the ranks agree), writes its checkpoint
// and stops; `qforge compile` then exits with kExitStopped, and the same
// command run again resumes from the checkpoint.
#pragma once

namespace qforge {

// Installs the handlers for SIGTERM and SIGUSR1 (idempotent).
void install_stop_handlers();

// The signal received since install_stop_handlers, or 0.
int stop_signal();

// Records `signal` as if it had been received (tests).
void request_stop(int signal);

// A run with nothing to resume (no fine-tuning): SIGTERM and SIGINT end it at
// once, as before, but with a line saying so and, on the rank holding it, the
// output directory's lock (`lock_file`, empty on other ranks) removed, so the
// next compile there needs no takeover. Exits 128 + the signal.
void install_ending_handlers(const char* lock_file);

}  // namespace qforge
