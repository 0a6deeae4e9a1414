// The exported file checked against the model it came from, on inputs that
// neither the converter (which evaluates each node on one batch of the data)
// nor calibration saw: fresh random rows in every shape of the data, and each
// dynamic axis at a size the data does not hold. A file that parts from its
// model is not written: the error names the output, and the first node where
// the two part, found by converting again with those inputs as the examples
// and every intermediate tensor an output of the file. The verdict runs the
// file as the ONNX standard defines it (onnxruntime's basic optimizations);
// onnxruntime's fused integer kernels are measured beside it, since they are
// the runtime's arithmetic, not the file's.
#pragma once
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "compile/evaluation.h"
#include "export/onnx_export.h"

namespace qforge {

// Each output of the file within this many dB of its model's (signal over error).
// Quantized files: the file's float arithmetic sums in another order than ATen's, so a value
// near a rounding boundary of an activation quantizer can land one step away, and a deep
// network carries such steps on (ResNet-18 at batch 1: 27 dB). A converter fault (a wrong
// weight, axis or op) shows far lower, at 0-10 dB.
constexpr double kMinOnnxSqnrDb = 20.0;
constexpr double kMinFloatOnnxSqnrDb = 60.0;  // float files: the same arithmetic, other kernels

struct OnnxVerification {
  bool verified = false;
  std::string runtime;               // the onnxruntime that ran the file
  std::string not_verified;          // why it was not run (no onnxruntime)
  std::vector<std::string> batches;  // the fresh inputs' shapes, one line a batch
  double worst_db = std::numeric_limits<double>::infinity();
  // The same batches with onnxruntime's optimizations on (Q/DQ fused into integer
  // kernels, as a deployment runs it): a figure, and a note when below min_db.
  double optimized_worst_db = std::numeric_limits<double>::infinity();
  std::string optimized_note;
};

// `reference` computes what the file must (run by `run`); `examples` are the
// file's inputs as exported, `info` the data whose shape groups they come from; `convert` exports the same model for
// other example inputs (with OnnxExportOptions::probe, for the search). ExportError (exit 7) when an output is below
// `min_db`.
OnnxVerification verify_onnx(const OnnxModel& onnx, torch::jit::Module& reference, const ForwardFn& run,
                             const std::vector<OnnxInputSpec>& examples, const DatasetInfo& info,
                             const std::function<OnnxModel(const std::vector<OnnxInputSpec>&)>& convert, bool dynamic,
                             double min_db);

// A copy of a compiled model with its fake-quantization ops taken out: what a
// float export (qforge export --float) computes.
torch::jit::Module without_fake_quantization(const torch::jit::Module& compiled);

}  // namespace qforge
