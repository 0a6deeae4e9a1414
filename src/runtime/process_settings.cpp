#include <ATen/Parallel.h>
#include <torch/csrc/jit/runtime/graph_executor.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>

#include "qforge/runtime.h"

namespace qforge {
namespace {

// TorchScript's optimizing executor profiles the first runs of a graph, then
// rewrites it and, on GPUs, compiles fused kernels at run time: seconds of
// work inside calibration and the first fine-tuning steps, for little gain on
// graphs of convolutions, matmuls and fused fake-quant ops. qforge runs the
// graphs as written (the speed of eager PyTorch from the first batch) unless
// QFORGE_TORCHSCRIPT_OPTIMIZE=1.
bool torchscript_optimize() {
  const char* value = std::getenv("QFORGE_TORCHSCRIPT_OPTIMIZE");
  return value && std::string(value) == "1";
}

}  // namespace

void use_qforge_process_settings(const Runtime& rt) {
  // Ranks sharing a host share its cores: without this each would start one
  // thread per core and oversubscribe them (an explicit OMP_NUM_THREADS wins).
  if (rt.local_size() > 1 && !std::getenv("OMP_NUM_THREADS"))
    at::set_num_threads(std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / rt.local_size()));
  torch::jit::setGraphExecutorOptimize(torchscript_optimize());
}

}  // namespace qforge
