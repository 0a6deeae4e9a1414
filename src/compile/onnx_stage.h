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

// The file's graph inputs: one batch of the experiment's tracing (else
// calibration, else evaluation) data, its axes symbolic where the shape groups
// differ, and the data they come from.
struct OnnxExamples {
  DatasetInfo info;
  std::vector<OnnxInputSpec> specs;
};
OnnxExamples onnx_examples(const ExperimentConfig& config, const DataTransformFn& transform = {});

// Exports `compiled` with graph inputs shaped as the experiment's data;
// ExportError names what cannot be expressed.
OnnxModel export_for_experiment(const torch::jit::Module& compiled, const ExperimentConfig& config,
                                const CallBinding& binding, const OnnxExportOptions& options,
                                const DataTransformFn& transform = {});

// Converts `compiled` as export_for_experiment did and checks the file on fresh
// inputs against `reference` (compile/onnx_verify.h): ExportError (exit 7)
// naming the output and the first node where they part; fills `summary`'s
// verification (or why there was none).
void verify_export(const OnnxModel& onnx, const torch::jit::Module& compiled, torch::jit::Module& reference,
                   const ForwardFn& run, const ExperimentConfig& config, const CallBinding& binding,
                   const OnnxExportOptions& options, const DataTransformFn& transform, OnnxSummary& summary);

// Runs `onnx_bytes` in onnxruntime on every evaluation row and compares it with
// `compiled` (TorchScript, run by `run`); fills summary.evaluation, or
// summary.not_evaluated with the reason.
void evaluate_onnx(const std::string& onnx_bytes, torch::jit::Module& compiled, const ForwardFn& run,
                   const ExperimentConfig& config, const DataTransformFn& transform, OnnxSummary& summary);

}  // namespace qforge
