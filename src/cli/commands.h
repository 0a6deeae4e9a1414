// The qforge subcommands. Each returns the process exit code.
#pragma once
#include <string>
#include <vector>

namespace qforge::cli {

int run_command_line(const std::vector<std::string>& args);

}  // namespace qforge::cli
