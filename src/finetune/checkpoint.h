// Fine-tuning checkpoints: everything a stopped run needs to continue as if
// it had never stopped (adapters, AdamW state, completed steps and their
// losses, the CPU random generator), tagged with a fingerprint of the model
// and settings so that a checkpoint of another run is refused. Rank 0 writes
// it atomically; every rank reads the same file.
#pragma once
#include <torch/optim/optimizer.h>

#include <string>
#include <vector>

namespace qforge {

struct CheckpointState {
  int64_t step = 0;          // completed optimizer steps
  std::vector<double> loss;  // their losses
};

void save_checkpoint(const std::string& path, const std::string& fingerprint, const CheckpointState& state,
                     const std::vector<at::Tensor>& parameters, const torch::optim::Optimizer& optimizer);

// Restores parameters (in place), optimizer and generator. DataError when the
// file cannot be read (truncated, not a checkpoint); ConfigError when it
// belongs to another model or other settings.
CheckpointState load_checkpoint(const std::string& path, const std::string& fingerprint,
                                std::vector<at::Tensor>& parameters, torch::optim::Optimizer& optimizer);

}  // namespace qforge
