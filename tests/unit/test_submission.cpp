#include <gtest/gtest.h>

#include <algorithm>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "qforge/config_yaml.h"
#include "qforge/errors.h"
#include "slurm/submission.h"

using namespace qforge;

namespace {
ExperimentConfig experiment(const std::string& extra) {
  return parse_config("model: {path: m.pt}\ncalibration_inputs: {files: [a.h5]}\nout_dir: out\n" + extra, "x.yaml");
}
const Submission kSubmission{"/exp/x.yaml", {"seed=3"}, "/opt/qforge/bin/qforge", "/exp"};

// The #SBATCH lines of a script, in order.
std::vector<std::string> directives(const std::string& script) {
  std::vector<std::string> lines;
  std::istringstream in(script);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("#SBATCH ", 0) == 0) lines.push_back(line.substr(8));
  return lines;
}
}  // namespace

TEST(Submission, ResourcesBecomeDirectivesBeforeTheFirstCommand) {
  const auto script = render_batch_script(
      experiment("resources: {nodes: 2, gpus_per_node: 4, cpus_per_task: 8, memory: 64G, time: '1:00:00', "
                 "partition: gpu, account: ml}\n"),
      kSubmission);
  const auto d = directives(script);
  for (const std::string expected : {"--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--cpus-per-task=8",
                                     "--mem=64G", "--time=1:00:00", "--partition=gpu", "--account=ml", "--chdir=/exp",
                                     "--export=ALL,QFORGE=/opt/qforge/bin/qforge", "--requeue", "--signal=USR1@120"})
    EXPECT_NE(std::find(d.begin(), d.end(), expected), d.end()) << expected << "\n" << script;
  // sbatch stops reading directives at the first command.
  EXPECT_LT(script.rfind("#SBATCH"), script.find("\nset -uo pipefail"));
  EXPECT_EQ(script.find("#qforge-resources"), std::string::npos);
  EXPECT_EQ(script.rfind("#!/usr/bin/env bash", 0), 0u);
}

TEST(Submission, CpuJobsAskForTasksAndSweepsForAnArray) {
  const auto plain = directives(render_batch_script(experiment(""), kSubmission));
  EXPECT_NE(std::find(plain.begin(), plain.end(), "--ntasks-per-node=1"), plain.end());
  EXPECT_EQ(std::find_if(plain.begin(), plain.end(), [](auto& l) { return l.rfind("--gpus", 0) == 0; }), plain.end());
  EXPECT_NE(
      std::find(plain.begin(), plain.end(), "--output=" + std::filesystem::absolute("out").string() + "/slurm-%j.out"),
      plain.end());
  const auto sweep = directives(render_batch_script(
      experiment("resources: {tasks_per_node: 3}\nsweep: [seed=1, seed=2, seed=3]\n"), kSubmission));
  EXPECT_NE(std::find(sweep.begin(), sweep.end(), "--ntasks-per-node=3"), sweep.end());
  EXPECT_NE(std::find(sweep.begin(), sweep.end(), "--array=0-2"), sweep.end());
  EXPECT_NE(std::find(sweep.begin(), sweep.end(),
                      "--output=" + std::filesystem::absolute("out").string() + "/slurm-%A_%a.out"),
            sweep.end());
}

TEST(Submission, SbatchGetsTheExperimentAndItsOverrides) {
  EXPECT_EQ(
      sbatch_command("/exp/out/submit.sbatch", kSubmission),
      (std::vector<std::string>{"sbatch", "--parsable", "/exp/out/submit.sbatch", "/exp/x.yaml", "--set", "seed=3"}));
  EXPECT_EQ(shell_quote("a=b/c.d"), "a=b/c.d");
  EXPECT_EQ(shell_quote("layer_quantization_settings[fc].skip=it's"),
            "'layer_quantization_settings[fc].skip=it'\\''s'");
  EXPECT_EQ(shell_quote(""), "''");
}

namespace {
// An executable shell script standing in for sbatch.
std::string fake_sbatch(const std::string& body) {
  const auto dir = std::filesystem::temp_directory_path() / ("qforge-fake-sbatch-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto path = dir / "sbatch";
  std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
  std::filesystem::permissions(path, std::filesystem::perms::owner_all);
  return path.string();
}
}  // namespace

TEST(Submission, RunSbatchReturnsTheJobIdItPrinted) {
  // Arguments reach sbatch as they are: no shell reads them.
  const auto sbatch = fake_sbatch("[ \"$2\" = \"it's x.yaml\" ] && echo '4242;cluster' || exit 9");
  EXPECT_EQ(run_sbatch({sbatch, "--parsable", "it's x.yaml"}), "4242");
}

TEST(Submission, RunSbatchNamesAMissingOrRefusingSbatch) {
  try {
    run_sbatch({"qforge-no-such-sbatch", "--parsable", "x.sbatch"});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("qforge-no-such-sbatch not found on PATH"), std::string::npos) << e.what();
  }
  const auto sbatch = fake_sbatch("echo 'sbatch: error: invalid partition' >&2; exit 1");
  try {
    run_sbatch({sbatch, "--parsable", "x.sbatch"});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("refused the job (exit status 1)"), std::string::npos) << e.what();
  }
}
