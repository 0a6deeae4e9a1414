// Calibration of activation ranges: the model runs every rank's shard with
// an observer in front of each quantized layer; statistics are reduced
// across ranks (pass 1 MIN/MAX, pass 2 integer histograms when the observer
// needs one, and the fixed-point XᵀX of the inputs GPTQ solves with), so
// every rank ends with the same statistics on any rank count.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "compile/phase_timer.h"
#include "data/batches.h"
#include "quant/observer.h"
#include "runtime/communicator.h"

namespace qforge {

struct CalibrationPoint {
  std::string layer;             // the layer whose input (or output) is observed
  TensorQuantSettings settings;  // its activation settings
  bool output = false;           // its output rather than its input
  bool hessian = false;          // also sum XᵀX of its input (GPTQ)
};

struct CalibrationStatistics {
  std::vector<ActivationObserver> observers;  // one per point
  // Per point: XᵀX / N of its input (float64, on the data's device) where the
  // point asked for it and saw values; undefined otherwise.
  std::vector<at::Tensor> hessians;
};

// Collective. Returns the reduced statistics of every point, identical on every rank.
CalibrationStatistics calibrate(const torch::jit::Module& model, const std::string& method,
                                const std::vector<CalibrationPoint>& points, const ForwardFn& run,
                                const ShardSource& shard, Communicator& comm, PhaseTimer& timer,
                                const std::string& phase = "calibrate");

// Runs the observed copy of the model over every input of this rank (once per pass).
using Sweep = std::function<void(torch::jit::Module& observed)>;

// The same over inputs `sweep` gives (e.g. a block's kept inputs); `device`:
// where they arrive, the same kind on every rank.
CalibrationStatistics calibrate(const torch::jit::Module& model, const std::string& method,
                                const std::vector<CalibrationPoint>& points, const Sweep& sweep,
                                const c10::Device& device, Communicator& comm, PhaseTimer& timer,
                                const std::string& phase);

// The chosen range of a point; ModelError names a layer whose input was never
// seen (the method did not run it). Call inside a collective phase.
ActivationRange calibrated_range(const CalibrationPoint& point, const ActivationObserver& observer);

}  // namespace qforge
