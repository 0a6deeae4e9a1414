// Sensitivity analysis: for each layer, the relative output error of the
// model when only that layer is quantized, on the same calibration batches
// on every rank. Layers are dealt round-robin to ranks and the results
// all-gathered exactly (hex floats), so N ranks take about 1/N of the time
// and give the single-rank numbers.
#pragma once
#include <vector>

#include "data/batches.h"
#include "graph/fake_quant_graph.h"
#include "qforge/runtime.h"

namespace qforge {

// The layers this rank measured and their errors.
struct SensitivityWork {
  std::vector<size_t> mine;      // indices of `layers` this rank measures
  std::vector<double> measured;  // their relative errors, in the same order
};

// This rank's share: runs the float model and, per assigned layer, the model
// with only that layer quantized. Local; run it inside a collective phase.
SensitivityWork measure_sensitivity(const torch::jit::Module& model, const std::string& method,
                                    const std::vector<LayerFakeQuant>& layers, const std::vector<Batch>& batches,
                                    const ForwardFn& run, int rank, int world);

// Collective: every layer's relative error, on every rank.
std::vector<double> gather_sensitivity(const SensitivityWork& work, size_t layer_count, Communicator& comm);

}  // namespace qforge
