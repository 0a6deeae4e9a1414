// Per-input-channel scales (AWQ, SmoothQuant): a layer computing W·x computes
// the same as (W·diag(s))·(x/s). Multiplying the weight's input columns by s
// moves range between the weight and its input; the division by s is folded
// into whatever produced x where the graph allows (a norm's weight and bias,
// an elementwise weight as RMSNorm's, the output rows of a linear layer, the
// linear operand of a product as SwiGLU's up projection), and is otherwise an
// explicit multiply in the graph, which the TorchScript and ONNX outputs keep.
#pragma once
#include <ATen/Tensor.h>
#include <torch/script.h>

#include <string>
#include <vector>

namespace qforge {

// Linear layers that read one tensor: q, k and v after a norm; gate and up.
struct InputGroup {
  std::vector<std::string> layers;  // in the order the method calls them
  int64_t channels = 0;             // the tensor's last axis, the weights' inputs
  // The parameters the division by s is folded into (dotted paths, divided
  // along their first axis); empty: an explicit multiply.
  std::vector<std::string> divided_params;
  std::string divided_in;  // for people: the module holding them, or "explicit multiply"
};

struct InputGroups {
  std::vector<InputGroup> groups;
  // Wanted layers that cannot be scaled, each with why ("called twice", ...).
  std::vector<std::pair<std::string, std::string>> refused;
};

// The groups of the `wanted` layers under `method`. A wanted layer must be
// called once, by aten::linear, with a weight that no other module shares;
// every other such layer reading the same tensor joins its group.
InputGroups input_groups(const torch::jit::Module& module, const std::string& method,
                         const std::vector<std::string>& wanted);

// A clone of `module` in which group k's layers have their weight's input
// columns multiplied by scales[k] ([channels], any float dtype) and their
// input divided by it, folded or explicit as the group says.
torch::jit::Module with_input_scales(const torch::jit::Module& module, const std::string& method,
                                     const std::vector<InputGroup>& groups, const std::vector<at::Tensor>& scales);

}  // namespace qforge
