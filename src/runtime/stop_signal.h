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

}  // namespace qforge
