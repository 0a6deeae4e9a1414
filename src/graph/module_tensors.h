// A TorchScript module's tensors as a whole: what it holds as attributes and
// what its graphs hold as constants, moved to a device or cast to a dtype together.
#pragma once
#include <torch/csrc/jit/ir/ir.h>
#include <torch/script.h>

#include <functional>

namespace qforge {

// Moves every tensor of the module in place: parameters, buffers and plain
// tensor attributes (quantization parameters), which Module::to leaves
// behind, and every tensor or device its methods' graphs hold as constants
// (a trace records the tables it computed and the `device=` of factories such
// as torch.arange as constants of the device it ran on). Tensors that share
// storage keep sharing it: tied weights stay one tensor on the new device.
// The methods are cloned afresh (their tensors shared, not copied), so no
// plan compiled for the old device survives.
void move_module(torch::jit::Module& module, const c10::Device& device);

// Casts a bfloat16 or float16 module to float32 in place, as move_module moves
// it: its tensors of those dtypes, its graphs' tensor constants, and the dtype
// arguments its graphs pass as those dtypes (`.to(torch.bfloat16)`, `dtype=`
// of factories); float32 and float64 stay as they are. The float32 model
// computes what the 16-bit one did, with less rounding.
void cast_to_float32(torch::jit::Module& module);

// Calls `edit` on every node of the graphs of every method of every module
// type and of the functions they call (inner blocks first), then drops the
// copies LibTorch made of them before, which inlining would read. `edit` may
// change a node's inputs and attributes, not remove nodes.
void edit_every_graph(torch::jit::Module& module, const std::function<void(torch::jit::Node*)>& edit);

// Makes `method`'s graph run wherever its inputs are: each device a trace fixed
// as a constant (the `device=` of torch.arange) becomes the device of the
// method's first tensor argument, and each tensor constant of more than one
// element becomes a buffer of the module (Module.to and torch.jit.load's
// map_location move buffers, not constants). Returns how many it changed.
int make_device_portable(torch::jit::Module& module, const std::string& method);

// Where the module computes: its first parameter's device (CPU without parameters).
c10::Device module_device(const torch::jit::Module& module);
// The dtype its floating-point parameters are held in (float32 without any).
at::ScalarType module_float_dtype(const torch::jit::Module& module);

}  // namespace qforge
