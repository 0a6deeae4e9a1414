// The device a rank computes on, and the mixed precision it may use there.
#pragma once
#include <c10/core/Device.h>

#include "qforge/config.h"

namespace qforge {

class Runtime;

// Where a rank computes, and whether ranks of its host share that GPU (gpu_index
// set, or more ranks than GPUs), which NCCL refuses.
struct ComputePlacement {
  c10::Device device{c10::kCPU};
  bool gpu_shared = false;
};

// device: cpu -> the CPU; cuda -> one GPU per rank (ConfigError when none is
// visible); auto -> a GPU when one is visible, else the CPU. The GPU is
// gpu_index, or the rank's local rank (ranks beyond the GPU count share them,
// with a warning).
ComputePlacement select_device(const ExperimentConfig& config, const Runtime& rt);

// Autocast on the GPU for the life of the scope (calibration and fine-tuning
// forwards); nothing with Autocast::Off or on the CPU. Restores the previous state.
class AutocastScope {
 public:
  AutocastScope(Autocast mode, const c10::Device& device);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false;
  bool was_enabled_ = false;
};

// The precision of float32 matrix products (LibTorch's float32 matmul
// precision: High lets cuBLAS use TF32 tensor cores) for the life of the
// scope, which restores the previous one. Convolutions keep LibTorch's
// setting (cuDNN's TF32 is on by default).
class MatmulPrecisionScope {
 public:
  explicit MatmulPrecisionScope(MatmulPrecision precision);
  ~MatmulPrecisionScope();
  MatmulPrecisionScope(const MatmulPrecisionScope&) = delete;
  MatmulPrecisionScope& operator=(const MatmulPrecisionScope&) = delete;

 private:
  int previous_;  // at::Float32MatmulPrecision, kept out of this header
};

}  // namespace qforge
