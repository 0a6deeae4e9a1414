#include "runtime/stop_signal.h"

#include <unistd.h>

#include <csignal>
#include <cstdio>

namespace qforge {
namespace {

volatile std::sig_atomic_t received = 0;

extern "C" void record_signal(int signal) { received = signal; }

char lock_to_remove[4096] = {0};  // set before the handlers are installed, only read by them

// Async-signal-safe: write, unlink and _exit only, on text made before.
extern "C" void end_on_signal(int signal) {
  static const char message[] =
      "qforge: stopped by a signal before the compile finished; artifacts are renamed into place only when "
      "complete, so out_dir keeps its previous set\n";
  if (lock_to_remove[0]) {
    (void)::write(STDERR_FILENO, message, sizeof(message) - 1);
    ::unlink(lock_to_remove);
  }
  ::_exit(128 + signal);
}

}  // namespace

void install_stop_handlers() {
  std::signal(SIGTERM, record_signal);
  std::signal(SIGUSR1, record_signal);
}

void install_ending_handlers(const char* lock_file) {
  std::snprintf(lock_to_remove, sizeof(lock_to_remove), "%s", lock_file ? lock_file : "");
  std::signal(SIGTERM, end_on_signal);
  std::signal(SIGINT, end_on_signal);
}

int stop_signal() { return received; }

void request_stop(int signal) { received = signal; }

}  // namespace qforge
