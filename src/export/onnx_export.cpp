#include "export/onnx_export.h"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>

#include <map>
#include <regex>

#include "export/onnx_converter.h"
#include "export/onnx_lint.h"
#include "graph/inline_calls.h"
#include "graph/module_tensors.h"
#include "qforge/errors.h"
#include "qforge/version.h"
#include "util/text.h"

namespace qforge {

using onnx_export::Converter;
using onnx_export::Val;

bool target_reads_onnx(Target target) { return target != Target::LibTorch && target != Target::None; }

namespace {

constexpr int64_t kMinOpset = 13;  // per-axis Q/DQ, Unsqueeze/Split axes as inputs
constexpr int64_t kMaxOpset = 21;
constexpr int64_t kInt4Opset = 21;  // INT4 and DequantizeLinear's block_size

// A block that raises on every path through it: a prim::RaiseException at its top level.
bool raises(const torch::jit::Block* block) {
  for (const auto* n : block->nodes())
    if (n->kind() == c10::prim::RaiseException) return true;
  return false;
}

// Checks that raise (scripted code asserting that shapes agree, that a weight
// is not None) have no ONNX form, and their conditions often none either (a
// comparison of shape lists): each `if` with one raising branch is replaced
// by its other branch.
void drop_assertions(torch::jit::Block* block) {
  for (auto it = block->nodes().begin(); it != block->nodes().end();) {
    torch::jit::Node* n = *it++;
    for (auto* inner : n->blocks()) drop_assertions(inner);
    if (n->kind() != c10::prim::If || raises(n->blocks()[0]) == raises(n->blocks()[1])) continue;
    torch::jit::Block* kept = n->blocks()[raises(n->blocks()[0]) ? 1 : 0];
    for (auto k = kept->nodes().begin(); k != kept->nodes().end();) (*k++)->moveBefore(n);
    for (size_t i = 0; i < n->outputs().size(); ++i) n->output(i)->replaceAllUsesWith(kept->outputs()[i]);
    n->destroy();
  }
}

std::shared_ptr<torch::jit::Graph> inlined_graph(const torch::jit::Module& module, const std::string& method) {
  auto graph = torch::jit::toGraphFunction(module.get_method(method).function()).graph()->copy();
  inline_calls(*graph);
  drop_assertions(graph->block());
  torch::jit::EliminateDeadCode(graph);
  return graph;
}

// Whether a fake-quant op in the graph rounds to 4 bits or fewer.
bool has_narrow_quantizer(const torch::jit::Graph& graph) {
  for (const auto* n : graph.nodes()) {
    const std::string kind = n->kind().toQualString();
    if (kind.find("fake_quantize") == std::string::npos) continue;
    const bool per_channel = kind.find("per_channel") != std::string::npos;
    const auto qmin = torch::jit::toIValue(n->input(per_channel ? 4 : 3));
    const auto qmax = torch::jit::toIValue(n->input(per_channel ? 5 : 4));
    if (qmin && qmax && qmax->toInt() - qmin->toInt() <= 15) return true;
  }
  return false;
}

int64_t choose_opset(const torch::jit::Graph& graph, const OnnxExportOptions& options) {
  const bool int4 = options.quantized && has_narrow_quantizer(graph);
  if (options.opset == 0) return int4 ? kInt4Opset : 17;
  if (options.opset < kMinOpset || options.opset > kMaxOpset)
    throw ExportError("ONNX export: opset " + std::to_string(options.opset) + " is outside what qforge writes (" +
                      std::to_string(kMinOpset) + ".." + std::to_string(kMaxOpset) + ")");
  if (int4 && options.opset < kInt4Opset)
    throw ExportError("ONNX export: the model has 4-bit weights, which need opset " + std::to_string(kInt4Opset) +
                      " or later (INT4 initializers behind a blocked DequantizeLinear); opset " +
                      std::to_string(options.opset) + " is too low");
  return options.opset;
}

void bind_inputs(Converter& cx, const torch::jit::Module& module, const torch::jit::Graph& graph,
                 const std::string& method, const CallBinding& binding, const std::vector<OnnxInputSpec>& inputs) {
  Val self;
  self.example = module._ivalue();
  cx.bind(graph.inputs()[0], self);
  const auto& arguments = module.get_method(method).function().getSchema().arguments();
  std::map<std::string, Val> given;
  for (const auto& input : inputs) {
    Val v;
    v.example = input.example;
    v.name = input.name;
    given[input.name] = v;
  }
  if (binding.mode == CallBinding::Mode::DictArgument) {
    Val dict;
    c10::Dict<std::string, at::Tensor> example;
    for (const auto& input : inputs) example.insert(input.name, input.example);
    dict.example = example;
    dict.fields = given;
    given = {{arguments.at(1).name(), dict}};
  } else if (binding.mode == CallBinding::Mode::Positional) {
    std::map<std::string, Val> by_argument;
    for (size_t i = 0; i < inputs.size(); ++i) by_argument[arguments.at(i + 1).name()] = given.at(inputs[i].name);
    given = by_argument;
  }
  for (size_t i = 1; i < graph.inputs().size(); ++i) {
    const std::string& name = arguments.at(i).name();
    if (auto found = given.find(name); found != given.end()) {
      cx.bind(graph.inputs()[i], found->second);
      continue;
    }
    Val constant;
    if (auto kwarg = binding.static_kwargs.find(name); kwarg != binding.static_kwargs.end())
      constant.example = kwarg->second;
    else if (arguments.at(i).default_value())
      constant.example = *arguments.at(i).default_value();
    else
      throw ExportError("ONNX export: " + method + " argument '" + name + "' has no value");
    cx.bind(graph.inputs()[i], constant);
  }
}

// The method's results as graph outputs: "output" for one tensor, "output_<i>" for a tuple, keys for a dict.
// Items that are None (GoogLeNet's auxiliary outputs in eval mode) are left out.
void add_outputs(const Val& result, onnx_export::OnnxBuilder& b, std::vector<std::string>& names) {
  std::vector<std::pair<std::string, Val>> outputs;
  if (result.example.isTensor()) {
    outputs.push_back({"output", result});
  } else if (!result.fields.empty()) {
    for (const auto& [key, v] : result.fields)
      if (!v.example.isNone()) outputs.push_back({key, v});
  } else {
    for (size_t i = 0; i < result.items.size(); ++i)
      if (!result.items[i].example.isNone()) outputs.push_back({"output_" + std::to_string(i), result.items[i]});
  }
  if (outputs.empty())
    throw ExportError("ONNX export: the method returns " + result.example.tagKind() + ", not tensors");
  for (const auto& [name, v] : outputs) {
    if (!v.example.isTensor()) throw ExportError("ONNX export: output '" + name + "' is not a tensor");
    if (v.name.empty()) throw ExportError("ONNX export: output '" + name + "' does not depend on the inputs");
    const std::string out = b.fresh(name);
    b.named_node("Identity", {v.name}, out);
    b.output(out, onnx_export::element_type(v.example.toTensor().scalar_type()), v.example.toTensor().dim());
    names.push_back(out);
  }
}

std::map<std::string, std::string> attribute_layers(const std::vector<std::string>& layers) {
  std::map<std::string, std::string> out;
  for (const auto& l : layers) out[std::regex_replace(l, std::regex("[^A-Za-z0-9_]"), "_")] = l;
  return out;
}

// A bfloat16 or float16 model is written in float32: onnxruntime's CPU kernels
// take float32, and TensorRT picks 16-bit kernels from its builder flags. The
// copy shares the module's float32 tensors; its inputs follow it.
torch::jit::Module in_float32(const torch::jit::Module& module, std::vector<OnnxInputSpec>& inputs) {
  if (module_float_dtype(module) == at::kFloat) return module;
  torch::jit::Module copy = module.clone(/*inplace=*/true);
  cast_to_float32(copy);
  for (auto& input : inputs)
    if (input.example.scalar_type() == at::kBFloat16 || input.example.scalar_type() == at::kHalf)
      input.example = input.example.to(at::kFloat);
  return copy;
}

}  // namespace

OnnxModel export_onnx(const torch::jit::Module& original, const std::string& method, const CallBinding& binding,
                      std::vector<OnnxInputSpec> inputs, const OnnxExportOptions& options) {
  torch::NoGradGuard no_grad;
  const torch::jit::Module module = in_float32(original, inputs);
  const auto graph = inlined_graph(module, method);
  OnnxModel model;
  model.opset = choose_opset(*graph, options);

  onnx_export::ConvertOptions convert;
  convert.opset = model.opset;
  convert.quantized = options.quantized;
  convert.dynamic = options.dynamic;
  convert.layer_of_attribute = attribute_layers(options.layer_names);
  convert.probe = options.probe;
  onnx_export::OnnxBuilder b(options.graph_name);
  Converter cx(b, convert);
  bind_inputs(cx, module, *graph, method, binding, inputs);
  cx.run(graph->block());
  add_outputs(cx.val(graph->outputs()[0]), b, model.outputs);
  for (const auto& probe : cx.probes) {  // after the model's own outputs, so those keep their places
    const std::string out = b.fresh("probe");
    b.named_node("Identity", {probe.name}, out);
    b.output(out, onnx_export::element_type(probe.expected.scalar_type()), probe.expected.dim());
    model.probes.push_back({out, probe.expected, probe.node});
  }

  for (const auto& input : inputs) {
    std::vector<int64_t> dims = input.example.sizes().vec();
    for (size_t d = 0; d < dims.size(); ++d)
      if (options.dynamic && !input.dim_names.at(d).empty()) dims[d] = -1;
    b.input(input.name, onnx_export::element_type(input.example.scalar_type()), dims, input.dim_names);
    model.inputs.push_back(input.name);
  }
  if (options.quantized) onnx_export::lint(cx.quantizers, options.target);
  b.prune_initializers();
  for (const auto& q : cx.quantizers) (q.weight ? model.quantized_weights : model.quantized_activations)++;
  model.notes = cx.notes;
  model.bytes = b.serialize(model.opset, {{"qforge_version", version()},
                                          {"target", to_string(options.target)},
                                          {"graph_name", options.graph_name},
                                          {"quantized", options.quantized ? "true" : "false"}});
  return model;
}

namespace {

// An image's axes are named as such where it is the model's only input; a
// decoder's past keys ([batch, heads, length, dim]) are not images.
std::string axis_name(int64_t axis, int64_t rank, const std::string& input, bool only_input) {
  if (axis == 0) return "batch";
  if (only_input && rank == 4 && axis == 2) return "height";
  if (only_input && rank == 4 && axis == 3) return "width";
  if (only_input && rank == 5) return std::vector<std::string>{"", "", "depth", "height", "width"}[axis];
  if ((rank == 2 || rank == 3) && axis == 1) return "sequence";
  return input + "_dim" + std::to_string(axis);
}

// One symbolic name says "the same size": axes of different inputs that share a
// name (a decoder's ids `sequence` and its past keys' length) but differ in
// size in some shape group are named apart, each after its input.
void name_axes_apart(const DatasetInfo& info, std::vector<OnnxInputSpec>& specs) {
  std::map<std::string, std::vector<std::pair<size_t, size_t>>> users;  // name -> (input, axis)
  for (size_t i = 0; i < specs.size(); ++i)
    for (size_t axis = 1; axis < specs[i].dim_names.size(); ++axis)
      if (!specs[i].dim_names[axis].empty()) users[specs[i].dim_names[axis]].push_back({i, axis});
  for (const auto& [name, axes] : users) {
    bool agree = true;
    for (const auto& g : info.groups)
      for (const auto& [i, axis] : axes)
        agree = agree &&
                g.inputs.at(i).row_shape.at(axis - 1) == g.inputs.at(axes[0].first).row_shape.at(axes[0].second - 1);
    if (agree) continue;
    for (const auto& [i, axis] : axes) specs[i].dim_names[axis] = specs[i].name + "_" + name;
  }
}

}  // namespace

std::vector<OnnxInputSpec> onnx_inputs_for(const DatasetInfo& info, const std::vector<at::Tensor>& example,
                                           bool dynamic) {
  std::vector<OnnxInputSpec> specs;
  for (size_t i = 0; i < info.input_names.size(); ++i) {
    OnnxInputSpec s;
    s.name = info.input_names[i];
    s.example = example.at(i);
    const int64_t rank = s.example.dim();
    s.dim_names.assign(rank, "");
    for (int64_t axis = 0; dynamic && axis < rank; ++axis) {
      bool varies = axis == 0;  // the batch axis is always symbolic
      for (const auto& g : info.groups)
        varies = varies || g.inputs.at(i).row_shape.at(axis - 1) != info.groups[0].inputs.at(i).row_shape.at(axis - 1);
      if (varies) s.dim_names[axis] = axis_name(axis, rank, s.name, info.input_names.size() == 1);
    }
    specs.push_back(std::move(s));
  }
  name_axes_apart(info, specs);
  return specs;
}

}  // namespace qforge
