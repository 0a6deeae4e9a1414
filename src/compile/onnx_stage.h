// The compile's export stage: the compiled model as model.qforge.onnx for the
// experiment's target, its graph inputs taken from the experiment's data, and
// the file run in onnxruntime on evaluation_inputs against the TorchScript model.
// Also what `qforge export` runs on an earlier compile's output.
#pragma once
#include "data/batches.h"
#include "export/onnx_export.h"
#include "qforge/compile.h"

namespace qforge {

// The export options the experiment asks for (target, opset, dynamic axes).
OnnxExportOptions onnx_options(const ExperimentConfig& config, const std::vector<std::string>& layer_names);

// Exports `compiled` with graph inputs shaped as the experiment's calibration
// (or evaluation) data; ExportError names what cannot be expressed.
OnnxModel export_for_experiment(const torch::jit::Module& compiled, const ExperimentConfig& config,
                                const CallBinding& binding, const OnnxExportOptions& options,
                                const DataTransformFn& transform = {});

// Runs `onnx_bytes` in onnxruntime on every evaluation row and compares it with
// `compiled` (TorchScript, run by `run`); fills summary.evaluation, or
// summary.not_evaluated with the reason.
void evaluate_onnx(const std::string& onnx_bytes, torch::jit::Module& compiled, const ForwardFn& run,
                   const ExperimentConfig& config, const DataTransformFn& transform, OnnxSummary& summary);

}  // namespace qforge
