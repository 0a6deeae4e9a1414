// Running an exported ONNX file in a real onnxruntime, from C++: qforge hands
// the rows to a small runner script (src/export/runners: Node.js with the npm
// package onnxruntime-node, or Python with onnxruntime) through raw files, so
// no onnxruntime headers or libraries are needed to build qforge.
#pragma once
#include <ATen/Tensor.h>

#include <optional>
#include <string>
#include <vector>

namespace qforge {

struct OnnxRuntimeRun {
  std::vector<at::Tensor> outputs;  // each output, rows stacked on axis 0
  std::string runtime;              // "onnxruntime-node 1.30.0 (node)" and the like
  double seconds = 0;
};

// Runs `model_path` on the rows of `inputs` (named as the graph's inputs) in
// batches of `batch_size`. nullopt, with the reason in `why`, when no runner
// finds an onnxruntime; ExportError when the runtime fails on the model.
// `optimization`: onnxruntime's graph optimization level. "all" (what a
// deployment runs) fuses Q/DQ pairs into integer kernels; "basic" folds
// constants only, so the file computes as the ONNX standard defines it.
std::optional<OnnxRuntimeRun> run_in_onnxruntime(const std::string& model_path, const std::vector<std::string>& names,
                                                 const std::vector<at::Tensor>& inputs, int64_t batch_size,
                                                 std::string& why, const std::string& optimization = "all");

}  // namespace qforge
