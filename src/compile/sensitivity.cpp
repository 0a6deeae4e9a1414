#include "compile/sensitivity.h"

#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "metrics/output_error.h"
#include "qforge/errors.h"
#include "runtime/logger.h"

namespace qforge {

SensitivityWork measure_sensitivity(const torch::jit::Module& model, const std::string& method,
                                    const std::vector<LayerFakeQuant>& layers, const std::vector<Batch>& batches,
                                    const ForwardFn& run, int rank, int world) {
  SensitivityWork work;
  for (size_t i = static_cast<size_t>(rank); i < layers.size(); i += static_cast<size_t>(world)) work.mine.push_back(i);
  if (work.mine.empty()) return work;
  torch::jit::Module reference = model;
  std::vector<c10::IValue> expected;
  for (const auto& batch : batches) expected.push_back(run(reference, batch));
  for (size_t i : work.mine) {
    torch::jit::Module one_layer = with_fake_quantization(model, method, {layers[i]});
    OutputError error;
    for (size_t b = 0; b < batches.size(); ++b) error.add(expected[b], run(one_layer, batches[b]));
    work.measured.push_back(error.relative());
    log::debug("sensitivity of " + layers[i].layer + ": " + std::to_string(work.measured.back()));
  }
  return work;
}

std::vector<double> gather_sensitivity(const SensitivityWork& work, size_t layer_count, Communicator& comm) {
  // Each layer is measured by exactly one rank: summing the others' zeros gives its value exactly.
  const int64_t n = static_cast<int64_t>(layer_count);
  at::Tensor errors = at::zeros({n}, at::kDouble), measured = at::zeros({n}, at::kLong);
  for (size_t k = 0; k < work.mine.size(); ++k) {
    errors[static_cast<int64_t>(work.mine[k])] = work.measured[k];
    measured[static_cast<int64_t>(work.mine[k])] = 1;
  }
  comm.all_reduce(errors);
  comm.all_reduce(measured);
  std::vector<double> all(layer_count);
  for (int64_t i = 0; i < n; ++i) {
    if (measured[i].item<int64_t>() != 1)
      throw Error("sensitivity: layer " + std::to_string(i) + " was measured by " +
                  std::to_string(measured[i].item<int64_t>()) + " ranks, expected 1");
    all[static_cast<size_t>(i)] = errors[i].item<double>();
  }
  return all;
}

}  // namespace qforge
