// The qforge subcommands. Each returns the process exit code.
#pragma once
#include <string>
#include <vector>

namespace qforge::cli {

// `users_terminal`: standard output is the user's terminal (decided before
// MPI starts, which sets the launcher's variables even without a launcher).
int run_command_line(const std::vector<std::string>& args, bool users_terminal);

}  // namespace qforge::cli
