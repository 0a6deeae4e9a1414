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

std::vector<double> gather_sensitivity(const SensitivityWork& work, size_t layer_count, const Runtime& runtime) {
  std::string mine;
  for (size_t k = 0; k < work.mine.size(); ++k) {
    char text[64];
    std::snprintf(text, sizeof(text), "%zu %a\n", work.mine[k], work.measured[k]);  // %a: exact
    mine += text;
  }
  std::vector<double> all(layer_count, 0.0);
  std::vector<bool> seen(layer_count, false);
  for (const auto& text : runtime.all_gather_strings(mine)) {
    std::istringstream in(text);
    size_t index;
    std::string value;
    while (in >> index >> value) {
      all.at(index) = std::strtod(value.c_str(), nullptr);
      seen[index] = true;
    }
  }
  for (size_t i = 0; i < layer_count; ++i)
    if (!seen[i]) throw Error("sensitivity: no rank measured layer " + std::to_string(i));
  return all;
}

}  // namespace qforge
