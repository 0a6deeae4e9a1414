#include "runtime/device.h"

#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <string>

#include "qforge/errors.h"
#include "qforge/runtime.h"
#include "runtime/logger.h"

// LibTorch 2.4 gave autocast one device-typed API; 1.13 has the CUDA-only one.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define QFORGE_AUTOCAST_BY_DEVICE_TYPE 1
#else
#define QFORGE_AUTOCAST_BY_DEVICE_TYPE 0
#endif

namespace qforge {

ComputePlacement select_device(const ExperimentConfig& config, const Runtime& rt) {
  if (config.device == Device::Cpu) return {};
  const int visible = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  if (visible == 0) {
    if (config.device == Device::Cuda)
      throw ConfigError("device: cuda, but rank " + std::to_string(rt.rank()) + " on " + rt.host() +
                        " sees no CUDA device (LibTorch without CUDA, no driver, or CUDA_VISIBLE_DEVICES empty); "
                        "set device: cpu or auto");
    return {};
  }
  int index = config.gpu_index >= 0 ? static_cast<int>(config.gpu_index) : rt.local_rank();
  if (config.gpu_index >= visible)
    throw ConfigError("gpu_index: " + std::to_string(config.gpu_index) + ", but rank " + std::to_string(rt.rank()) +
                      " on " + rt.host() + " sees " + std::to_string(visible) + " GPU(s) (0.." +
                      std::to_string(visible - 1) + ")");
  if (index >= visible) {
    log::warn("rank " + std::to_string(rt.rank()) + " is local rank " + std::to_string(rt.local_rank()) + " of " +
              std::to_string(rt.local_size()) + " on " + rt.host() + ", which has " + std::to_string(visible) +
              " GPU(s): ranks share GPUs (start one rank per GPU)");
    index %= visible;
  }
  const bool shared = rt.local_size() > 1 && (config.gpu_index >= 0 || rt.local_size() > visible);
  return {c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index)), shared};
}

namespace {

// LibTorch's names for its float32 matmul precisions (2.x sets them by name only).
const char* precision_name(at::Float32MatmulPrecision p) {
  switch (p) {
    case at::Float32MatmulPrecision::HIGH: return "high";
    case at::Float32MatmulPrecision::MEDIUM: return "medium";
    default: return "highest";
  }
}

}  // namespace

MatmulPrecisionScope::MatmulPrecisionScope(MatmulPrecision precision)
    : previous_(static_cast<int>(at::globalContext().float32MatmulPrecision())) {
  at::globalContext().setFloat32MatmulPrecision(precision == MatmulPrecision::High ? "high" : "highest");
}

MatmulPrecisionScope::~MatmulPrecisionScope() {
  at::globalContext().setFloat32MatmulPrecision(precision_name(static_cast<at::Float32MatmulPrecision>(previous_)));
}

AutocastScope::AutocastScope(Autocast mode, const c10::Device& device) {
  if (mode == Autocast::Off || !device.is_cuda()) return;
  const at::ScalarType dtype = mode == Autocast::BFloat16 ? at::kBFloat16 : at::kHalf;
  active_ = true;
#if QFORGE_AUTOCAST_BY_DEVICE_TYPE
  was_enabled_ = at::autocast::is_autocast_enabled(at::kCUDA);
  at::autocast::set_autocast_dtype(at::kCUDA, dtype);
  at::autocast::set_autocast_enabled(at::kCUDA, true);
#else
  was_enabled_ = at::autocast::is_enabled();
  at::autocast::set_autocast_gpu_dtype(dtype);
  at::autocast::set_enabled(true);
#endif
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  // Leaving the outermost scope frees the casts autocast cached for this forward.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
#if QFORGE_AUTOCAST_BY_DEVICE_TYPE
  at::autocast::set_autocast_enabled(at::kCUDA, was_enabled_);
#else
  at::autocast::set_enabled(was_enabled_);
#endif
}

}  // namespace qforge
