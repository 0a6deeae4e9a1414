#include "slurm/submission.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "qforge/errors.h"

namespace qforge {
namespace {

const char* kMarker = "#qforge-resources";

std::string absolute(const std::string& path) {
  return std::filesystem::absolute(path).lexically_normal().string();
}

}  // namespace

int64_t ranks_per_node(const Resources& resources) {
  if (resources.tasks_per_node > 0) return resources.tasks_per_node;
  return std::max<int64_t>(1, resources.gpus_per_node);
}

std::string shell_quote(const std::string& word) {
  if (!word.empty() && word.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=/.,:@%") ==
                           std::string::npos)
    return word;
  std::string quoted = "'";
  for (char ch : word) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return quoted + "'";
}

std::string render_batch_script(const ExperimentConfig& config, const Submission& submission) {
  const Resources& r = config.resources;
  const std::string out_dir = absolute(config.out_dir);
  std::ostringstream lines;
  lines << "# rendered by qforge submit from " << submission.config_path << "\n";
  lines << "#SBATCH --job-name=qforge-" << config.effective_graph_name() << "\n";
  lines << "#SBATCH --nodes=" << r.nodes << "\n";
  lines << "#SBATCH --ntasks-per-node=" << ranks_per_node(r) << "\n";
  lines << "#SBATCH --cpus-per-task=" << r.cpus_per_task << "\n";
  if (r.gpus_per_node > 0) lines << "#SBATCH --gpus-per-node=" << r.gpus_per_node << "\n";
  if (!r.memory.empty()) lines << "#SBATCH --mem=" << r.memory << "\n";
  if (!r.time.empty()) lines << "#SBATCH --time=" << r.time << "\n";
  if (!r.partition.empty()) lines << "#SBATCH --partition=" << r.partition << "\n";
  if (!r.account.empty()) lines << "#SBATCH --account=" << r.account << "\n";
  lines << "#SBATCH --chdir=" << submission.working_directory << "\n";
  // One log per job (per array task) beside the artifacts; the ranks' own logs go to logs_dir.
  if (config.sweep.empty()) {
    lines << "#SBATCH --output=" << out_dir << "/slurm-%j.out\n";
  } else {
    lines << "#SBATCH --array=0-" << config.sweep.size() - 1 << "\n";
    lines << "#SBATCH --output=" << out_dir << "/slurm-%A_%a.out\n";
  }
  lines << "#SBATCH --export=ALL,QFORGE=" << submission.qforge_binary << "\n";

  std::string script = batch_script_template();
  const auto at = script.find(kMarker);
  if (at == std::string::npos)
    throw Error(std::string("slurm/compile.sbatch has no '") + kMarker + "' line: qforge was built from a damaged copy");
  const auto end = script.find('\n', at);
  script.replace(at, end == std::string::npos ? std::string::npos : end + 1 - at, lines.str());
  return script;
}

std::vector<std::string> sbatch_command(const std::string& script_path, const Submission& submission) {
  std::vector<std::string> command{"sbatch", "--parsable", script_path, submission.config_path};
  for (const auto& o : submission.overrides) {
    command.push_back("--set");
    command.push_back(o);
  }
  return command;
}

std::string run_sbatch(const std::vector<std::string>& command) {
  bool found = false;
  std::istringstream path(std::getenv("PATH") ? std::getenv("PATH") : "");
  for (std::string dir; std::getline(path, dir, ':');)
    found = found || (!dir.empty() && ::access((std::filesystem::path(dir) / command[0]).c_str(), X_OK) == 0);
  if (!found)
    throw Error(command[0] + " not found on PATH: qforge submit runs where SLURM's commands do (a login node); "
                "--dry-run prints the batch script without it");
  std::string line;
  for (const auto& word : command) line += (line.empty() ? "" : " ") + shell_quote(word);
  FILE* pipe = ::popen(line.c_str(), "r");  // stdout is the job id; sbatch's complaints go to our stderr
  if (!pipe) throw Error("cannot run " + line);
  std::string output;
  char buffer[256];
  while (size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, n);
  const int status = ::pclose(pipe);
  const int code = status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (code != 0) throw Error(command[0] + " refused the job (exit status " + std::to_string(code) + "): " + line);
  // --parsable prints "jobid" or "jobid;cluster".
  const std::string id = output.substr(0, output.find_first_of(";\n"));
  if (id.empty()) throw Error(command[0] + " printed no job id: " + line);
  return id;
}

}  // namespace qforge
