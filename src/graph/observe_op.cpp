#include "graph/observe_op.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include <limits>
#include <mutex>
#include <optional>

#include "qforge/errors.h"
#include "qforge_version_config.h"
#if QFORGE_HAVE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "quant/clamp_extrema_cuda.h"
#endif

namespace qforge {
namespace {

struct Sink {
  ObservationSink take;
  bool takes_extrema;  // fused kernels may run
};

std::mutex sink_mutex;
Sink* active = nullptr;

Sink& active_sink() {
  if (!active) throw Error("a qforge calibration op ran outside calibration (a calibration graph escaped its scope)");
  return *active;
}

void observe(const at::Tensor& x, int64_t point, bool written_later) {
  std::lock_guard<std::mutex> lock(sink_mutex);
  active_sink().take({point, x, at::Tensor(), written_later});
}

struct ClampWithExtrema {
  at::Tensor y, partial_extrema;
};

// The clamp and its per-block range in one kernel, where one applies: a CUDA
// tensor of float32, float16 or bfloat16 whose elements fill its memory.
std::optional<ClampWithExtrema> clamp_with_extrema(const at::Tensor& x, double lower, double upper, bool inplace) {
#if QFORGE_HAVE_CUDA_KERNELS
  std::optional<ClampElement> element;
  if (x.scalar_type() == at::kFloat) element = ClampElement::Float32;
  if (x.scalar_type() == at::kHalf) element = ClampElement::Float16;
  if (x.scalar_type() == at::kBFloat16) element = ClampElement::BFloat16;
  if (!x.is_cuda() || !element || x.numel() == 0 || !x.is_non_overlapping_and_dense()) return std::nullopt;
  if (at::GradMode::is_enabled() && x.requires_grad()) return std::nullopt;  // the kernel has no backward
  const c10::cuda::CUDAGuard on_device(x.device());
  ClampWithExtrema out;
  out.y = inplace ? x : at::empty_like(x);  // empty_like keeps a dense tensor's strides
  const int blocks = clamp_extrema_blocks(x.numel());
  out.partial_extrema = at::empty({2, blocks}, x.options().dtype(at::kFloat));
  clamp_with_extrema_cuda(x.data_ptr(), out.y.data_ptr(), x.numel(), *element, static_cast<float>(lower),
                          static_cast<float>(upper), out.partial_extrema.data_ptr<float>(), blocks,
                          c10::cuda::getCurrentCUDAStream().stream());
  return out;
#else
  return std::nullopt;
#endif
}

// The op the graph held: relu for [0, inf), else hardtanh (which relu6 is).
at::Tensor clamp_as_aten(const at::Tensor& x, double lower, double upper, bool inplace) {
  at::Tensor& self = const_cast<at::Tensor&>(x);
  if (lower == 0 && upper == std::numeric_limits<double>::infinity()) return inplace ? at::relu_(self) : at::relu(x);
  return inplace ? at::hardtanh_(self, lower, upper) : at::hardtanh(x, lower, upper);
}

at::Tensor observed_clamp(const at::Tensor& x, c10::IntArrayRef points, double lower, double upper, bool inplace,
                          bool written_later) {
  std::lock_guard<std::mutex> lock(sink_mutex);
  Sink& sink = active_sink();
  if (sink.takes_extrema)
    if (const auto fused = clamp_with_extrema(x, lower, upper, inplace)) {
      for (int64_t point : points) sink.take({point, fused->y, fused->partial_extrema, written_later});
      return fused->y;
    }
  at::Tensor y = clamp_as_aten(x, lower, upper, inplace);
  for (int64_t point : points) sink.take({point, y, at::Tensor(), written_later});
  return y;
}

void activate(Sink sink) {
  std::lock_guard<std::mutex> lock(sink_mutex);
  if (active) throw Error("ObserveScope: a calibration is already running in this process");
  active = new Sink(std::move(sink));
}

}  // namespace

ObserveScope::ObserveScope(ObservationSink sink) { activate({std::move(sink), true}); }

ObserveScope::ObserveScope(ObserveSink sink) {
  activate({[sink = std::move(sink)](const Observation& o) { sink(o.point, o.x); }, false});
}

ObserveScope::~ObserveScope() {
  std::lock_guard<std::mutex> lock(sink_mutex);
  delete active;
  active = nullptr;
}

}  // namespace qforge

// CONSERVATIVE alias analysis marks the ops as having side effects, so the
// graph optimizer neither removes nor reorders them.
TORCH_LIBRARY(qforge, m) {
  m.def(torch::schema("qforge::observe(Tensor x, int point, bool written_later) -> ()",
                      c10::AliasAnalysisKind::CONSERVATIVE),
        &qforge::observe);
  m.def(torch::schema("qforge::observed_clamp(Tensor x, int[] points, float lower, float upper, bool inplace, "
                      "bool written_later) -> Tensor",
                      c10::AliasAnalysisKind::CONSERVATIVE),
        &qforge::observed_clamp);
}
