// The compiled model as an ONNX file (QuantizeLinear / DequantizeLinear),
// written by qforge's own C++ from the TorchScript graph and its quantization
// parameters: integer weights behind DequantizeLinear (int4 in blocks from
// opset 21), activations through Q/DQ pairs, placed and checked per target.
#pragma once
#include <torch/script.h>

#include <string>
#include <vector>

#include "data/dataset.h"
#include "export/onnx_converter.h"
#include "graph/model.h"
#include "qforge/config.h"

namespace qforge {

struct OnnxInputSpec {
  std::string name;                    // the graph input's name (the data's input name)
  at::Tensor example;                  // one batch of it
  std::vector<std::string> dim_names;  // per dim: "" fixed at the example's size, else its symbolic name
};

struct OnnxExportOptions {
  Target target = Target::OnnxRuntime;
  int64_t opset = 0;      // 0: 17, or 21 when weights are 4-bit (blocked DequantizeLinear)
  bool quantized = true;  // false: the same graph with every quantizer left out (the float model)
  bool dynamic = true;    // false: every dimension fixed at the example's size
  std::string graph_name = "model";
  std::vector<std::string> layer_names;  // for messages: quantization attributes name their layer
  bool probe = false;  // every floating tensor computed at run time also an output (OnnxModel::probes)
};

struct OnnxModel {
  std::string bytes;  // the serialized ModelProto
  int64_t opset = 0;
  int64_t quantized_weights = 0, quantized_activations = 0;
  std::vector<std::string> inputs, outputs;
  std::vector<std::string> notes;  // what the user should know (fixed pooling windows, ...)
  // With OnnxExportOptions::probe: outputs after the model's own, one per intermediate tensor, with
  // what TorchScript computed for it on the example inputs.
  std::vector<onnx_export::Probe> probes;
};

// Converts `method` of `module` (a compiled model) for the target. ExportError
// (exit 7) names the op, the layer and the source line of anything without an
// ONNX form, or the layer and rule the target refuses; nothing is written.
// A bfloat16 or float16 model is written in float32 (its 16-bit inputs too).
OnnxModel export_onnx(const torch::jit::Module& module, const std::string& method, const CallBinding& binding,
                      std::vector<OnnxInputSpec> inputs, const OnnxExportOptions& options);

// The graph inputs for data laid out as `info`: one example batch, the batch
// axis symbolic (when dynamic), and every axis whose size differs between the
// file's shape groups ("sequence", "height", "width", ...).
std::vector<OnnxInputSpec> onnx_inputs_for(const DatasetInfo& info, const std::vector<at::Tensor>& example,
                                           bool dynamic);

// Whether the target's deployment reads ONNX (every target but libtorch and none).
bool target_reads_onnx(Target target);

}  // namespace qforge
