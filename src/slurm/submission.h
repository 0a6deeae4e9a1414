// qforge submit: an experiment as a SLURM batch job. The script is
// slurm/compile.sbatch (built into qforge) with the experiment's `resources`
// as #SBATCH lines; a sweep becomes an array job, one task per setting.
#pragma once
#include <string>
#include <vector>

#include "qforge/config.h"

namespace qforge {

struct Submission {
  std::string config_path;             // the experiment file, absolute
  std::vector<std::string> overrides;  // the command line's --set KEY=VALUE
  std::string qforge_binary;           // what the ranks run, absolute
  std::string working_directory;       // where the job starts: relative paths resolve as they did here
};

// slurm/compile.sbatch as it is in the source tree qforge was built from.
const std::string& batch_script_template();

// The batch script for `config` (loaded from submission.config_path with its overrides).
std::string render_batch_script(const ExperimentConfig& config, const Submission& submission);

// The sbatch command that submits `script_path` with the experiment's arguments.
std::vector<std::string> sbatch_command(const std::string& script_path, const Submission& submission);

// Ranks per node the job asks for: tasks_per_node, or one per GPU.
int64_t ranks_per_node(const Resources& resources);

// Runs `command` (sbatch_command's) and returns the job id sbatch printed.
// Error when sbatch is not on PATH or refuses the job (its own message is on stderr).
std::string run_sbatch(const std::vector<std::string>& command);

// One argument as the shell reads it back unchanged.
std::string shell_quote(const std::string& word);

}  // namespace qforge
