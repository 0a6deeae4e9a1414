// libFuzzer target: the fine-tuning checkpoint reader, as a resumed run calls
// it. The input is the checkpoint file's bytes. Refusing with a qforge::Error
// (a message naming the file, with the resume: false hint) is the expected way
// out; any other exception, a crash, or a sanitizer report is a bug. A file
// that loads must leave parameters of the shapes the run asked for.
#include <torch/optim/adamw.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <unistd.h>

#include "finetune/checkpoint.h"
#include "qforge/errors.h"

namespace {

const char* const kFingerprint = "fuzz-run";

struct Run {
  std::vector<at::Tensor> parameters{torch::zeros({4, 3}, torch::requires_grad()),
                                     torch::zeros({3}, torch::requires_grad())};
  torch::optim::AdamW optimizer{parameters, torch::optim::AdamWOptions(1e-3)};
};

std::string scratch_file() {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/qforge-fuzz-checkpoint-" + std::to_string(getpid()) + ".pt";
}

// A real checkpoint of the run above after one step: the corpus starts from it.
void write_valid_checkpoint(const std::string& path) {
  Run run;
  for (auto& p : run.parameters) p.mutable_grad() = torch::ones_like(p);
  run.optimizer.step();
  qforge::save_checkpoint(path, kFingerprint, {1, {0.5}}, run.parameters, run.optimizer);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  // The first corpus directory given gets the current format's valid file.
  for (int i = 1; i < *argc; ++i) {
    const std::string arg = (*argv)[i];
    if (arg.empty() || arg[0] == '-') continue;
    write_valid_checkpoint(arg + "/valid_checkpoint.pt");
    break;
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = scratch_file();
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  Run run;
  try {
    const auto state = qforge::load_checkpoint(path, kFingerprint, run.parameters, run.optimizer);
    if (state.step < 0 || run.parameters[0].sizes() != at::IntArrayRef({4, 3}) ||
        run.parameters[1].sizes() != at::IntArrayRef({3})) {
      std::fprintf(stderr, "a checkpoint loaded with step %lld or parameters of other shapes\n",
                   static_cast<long long>(state.step));
      std::abort();
    }
  } catch (const qforge::Error&) {
    return 0;  // refused with a message
  }
  return 0;
}
