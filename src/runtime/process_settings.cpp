#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/version.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "qforge/runtime.h"
#include "runtime/logger.h"

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

// The model's own warnings (warnings.warn in scripted code, ATen's notes on
// the ops it runs) go to qforge's log once each, naming their source; LibTorch
// would print them through glog on every batch.
class LogOnceWarnings : public c10::WarningHandler {
 public:
#if TORCH_VERSION_MAJOR >= 2
  void process(const c10::Warning& warning) override { log_once(warning.source_location(), warning.msg()); }
#else
  void process(const c10::SourceLocation& where, const std::string& message, const bool) override {
    log_once(where, message);
  }
#endif

 private:
  void log_once(const c10::SourceLocation& where, const std::string& message) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!seen_.insert(message).second) return;
    log::warn("the model warns (" + std::string(where.file ? where.file : "?") + ":" + std::to_string(where.line) +
              "): " + message + " (each warning is shown once)");
  }
  std::mutex mutex_;
  std::set<std::string> seen_;
};

void log_model_warnings_once() {
  static LogOnceWarnings handler;
#if TORCH_VERSION_MAJOR >= 2
  c10::WarningUtils::set_warning_handler(&handler);
#else
  c10::Warning::set_warning_handler(&handler);
#endif
}

}  // namespace

void use_qforge_process_settings(const Runtime& rt) {
  // Ranks sharing a host share its cores: without this each would start one
  // thread per core and oversubscribe them (an explicit OMP_NUM_THREADS wins).
  if (rt.local_size() > 1 && !std::getenv("OMP_NUM_THREADS"))
    at::set_num_threads(std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / rt.local_size()));
  torch::jit::setGraphExecutorOptimize(torchscript_optimize());
  log_model_warnings_once();  // the handler is the calling thread's: the one that runs the model
}

}  // namespace qforge
