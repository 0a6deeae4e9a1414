// The MPI lifecycle of every qforge process: init once, catch everything,
// finalize only on success. An error every rank reached together exits
// cleanly on all ranks with the message printed once (Runtime::collective_phase);
// any other error aborts the whole job, so no rank is left waiting.
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include "cli/commands.h"
#include "qforge/errors.h"
#include "qforge/runtime.h"

namespace {

// Standard output is the user's terminal, not a file, a pipe or the
// pseudo-terminal an MPI launcher gives each rank. Asked before MPI starts:
// Open MPI sets its launcher's variables even in a process started alone.
bool stdout_is_users_terminal() {
  const bool launched = std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMIX_RANK") || std::getenv("PMI_RANK");
  return isatty(STDOUT_FILENO) && !launched;
}

}  // namespace

int main(int argc, char** argv) {
  const bool users_terminal = stdout_is_users_terminal();
  qforge::Runtime* runtime = nullptr;
  try {
    runtime = &qforge::Runtime::init(&argc, &argv);
    qforge::use_qforge_process_settings(*runtime);
  } catch (const std::exception& e) {
    std::cerr << "qforge: error: cannot start MPI: " << e.what() << std::endl;
    return qforge::kExitLibrary;
  }
  int code = qforge::kExitOk;
  try {
    code = qforge::cli::run_command_line(std::vector<std::string>(argv + 1, argv + argc), users_terminal);
  } catch (const qforge::PeerFailed& e) {
    code = e.exit_code();  // rank 0 already printed every rank's message
  } catch (const qforge::Error& e) {
    std::cerr << "qforge: error" << (runtime->size() > 1 ? " on rank " + std::to_string(runtime->rank()) : "") << ": "
              << e.what() << std::endl;
    if (runtime->size() > 1) runtime->abort(e.exit_code());
    code = e.exit_code();
  } catch (const std::exception& e) {
    std::cerr << "qforge: internal error" << (runtime->size() > 1 ? " on rank " + std::to_string(runtime->rank()) : "")
              << ": " << e.what() << std::endl;
    if (runtime->size() > 1) runtime->abort(qforge::kExitFailure);
    code = qforge::kExitFailure;
  }
  runtime->finalize();
  return code;
}
