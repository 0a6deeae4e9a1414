#include "slurm/submission.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "qforge/errors.h"

namespace qforge {
namespace {

const char* kMarker = "#qforge-resources";

std::string absolute(const std::string& path) { return std::filesystem::absolute(path).lexically_normal().string(); }

}  // namespace

int64_t ranks_per_node(const Resources& resources) {
  if (resources.tasks_per_node > 0) return resources.tasks_per_node;
  return std::max<int64_t>(1, resources.gpus_per_node);
}

std::string shell_quote(const std::string& word) {
  if (!word.empty() &&
      word.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=/.,:@%") ==
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
    throw Error(std::string("slurm/compile.sbatch has no '") + kMarker +
                "' line: qforge was built from a damaged copy");
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

namespace {

// Starts `command` (no shell: its words are the arguments) with its stdout
// on a pipe, and returns everything it printed there and its exit status.
// posix_spawnp searches PATH itself and, unlike fork, is safe in an MPI process.
std::pair<std::string, int> run_capturing_stdout(const std::vector<std::string>& command) {
  int fds[2];
  if (::pipe(fds) != 0) throw Error("cannot create a pipe to run " + command[0]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  posix_spawn_file_actions_addclose(&actions, fds[1]);
  std::vector<char*> argv;
  for (const auto& word : command) argv.push_back(const_cast<char*>(word.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int spawned = ::posix_spawnp(&pid, command[0].c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (spawned != 0) {
    ::close(fds[0]);
    if (spawned == ENOENT)
      throw Error(command[0] +
                  " not found on PATH: qforge submit runs where SLURM's commands do (a login node); "
                  "--dry-run prints the batch script without it");
    throw Error("cannot run " + command[0] + ": " + std::strerror(spawned));
  }
  std::string output;
  char buffer[256];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) != 0;) {
    if (n > 0)
      output.append(buffer, static_cast<size_t>(n));
    else if (errno != EINTR)
      break;
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return {output, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

}  // namespace

std::string run_sbatch(const std::vector<std::string>& command) {
  std::string line;
  for (const auto& word : command) line += (line.empty() ? "" : " ") + shell_quote(word);
  // stdout is the job id; sbatch's complaints go to our stderr.
  const auto [output, code] = run_capturing_stdout(command);
  if (code != 0) throw Error(command[0] + " refused the job (exit status " + std::to_string(code) + "): " + line);
  // --parsable prints "jobid" or "jobid;cluster".
  const std::string id = output.substr(0, output.find_first_of(";\n"));
  if (id.empty()) throw Error(command[0] + " printed no job id: " + line);
  return id;
}

}  // namespace qforge
