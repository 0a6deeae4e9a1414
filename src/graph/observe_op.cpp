#include "graph/observe_op.h"

#include <torch/library.h>

#include <mutex>

#include "qforge/errors.h"

namespace qforge {
namespace {

std::mutex sink_mutex;
ObserveSink* active_sink = nullptr;

void observe(const at::Tensor& x, int64_t point) {
  std::lock_guard<std::mutex> lock(sink_mutex);
  if (!active_sink) throw Error("qforge::observe ran outside calibration (a calibration graph escaped its scope)");
  (*active_sink)(point, x);
}

}  // namespace

ObserveScope::ObserveScope(ObserveSink sink) {
  std::lock_guard<std::mutex> lock(sink_mutex);
  if (active_sink) throw Error("ObserveScope: a calibration is already running in this process");
  active_sink = new ObserveSink(std::move(sink));
}

ObserveScope::~ObserveScope() {
  std::lock_guard<std::mutex> lock(sink_mutex);
  delete active_sink;
  active_sink = nullptr;
}

}  // namespace qforge

// CONSERVATIVE alias analysis marks the op as having side effects, so the
// graph optimizer neither removes nor reorders it although it returns nothing.
TORCH_LIBRARY(qforge, m) {
  m.def(torch::schema("qforge::observe(Tensor x, int point) -> ()", c10::AliasAnalysisKind::CONSERVATIVE),
        &qforge::observe);
}
