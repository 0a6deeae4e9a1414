// Layers that hold their weight transposed, [inputs, outputs], and compute
// x·W + b with addmm (GPT-2's Conv1D in transformers), rewritten as Linear
// layers: weight [outputs, inputs], aten::linear. Everything that works on
// Linear layers (per-channel scales, GPTQ, AWQ, SmoothQuant, the ONNX
// MatMul) then works on them unchanged.
#pragma once
#include <torch/script.h>

#include <string>
#include <vector>

namespace qforge {

// Rewrites, in place, every module type whose weight is read only as addmm's
// third operand (with beta = alpha = 1 and the module's own 1-D bias); returns
// the names of the layers changed. The methods are cloned afresh.
std::vector<std::string> linears_from_transposed_layers(torch::jit::Module& module);

}  // namespace qforge
