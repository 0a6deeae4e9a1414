// What each target can build, checked on the quantizers of an exported graph
// before anything is written (TensorRT's explicit-quantization rules,
// onnxruntime's and OpenVINO's QDQ rules, weight-only int4 for TensorRT-LLM).
#pragma once
#include <vector>

#include "export/onnx_converter.h"
#include "qforge/config.h"

namespace qforge::onnx_export {

// ExportError listing every quantizer that breaks a rule of `target`, naming the layer and the rule.
void lint(const std::vector<QuantizerRecord>& quantizers, Target target);

}  // namespace qforge::onnx_export
