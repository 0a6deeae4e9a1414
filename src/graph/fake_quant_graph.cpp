#include "qforge/fake_quant_graph.h"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/inliner.h>

#include <map>
#include <regex>
#include <set>

#include "qforge/errors.h"

namespace qforge {
namespace {

using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;
using torch::jit::WithInsertPoint;

// Ops whose input 0 is the activation a weight multiplies.
bool consumes_activation(const Node* n) {
  static const std::set<std::string> ops = {"aten::linear",       "aten::conv1d",        "aten::conv2d",
                                            "aten::conv3d",       "aten::_convolution",  "aten::conv_transpose1d",
                                            "aten::conv_transpose2d", "aten::conv_transpose3d"};
  return ops.count(n->kind().toQualString()) > 0;
}

void collect_weight_reads(torch::jit::Block* block, const Value* self, std::map<std::string, std::vector<Node*>>& out) {
  for (Node* n : block->nodes()) {
    for (auto* inner : n->blocks()) collect_weight_reads(inner, self, out);
    if (n->kind() != c10::prim::GetAttr || n->s(c10::attr::name) != "weight") continue;
    if (auto path = attribute_path(n->input(), self)) out[*path].push_back(n);
  }
}

// "layer1.0.conv1" -> "_qforge__layer1_0_conv1__<what>": one attribute per layer on the root.
std::string attribute_name(const std::string& layer, const std::string& what) {
  return "_qforge__" + std::regex_replace(layer, std::regex("[^A-Za-z0-9_]"), "_") + "__" + what;
}

Value* add_tensor_attribute(torch::jit::Module& module, Graph& graph, const std::string& name, const at::Tensor& value) {
  module.register_attribute(name, c10::TensorType::get(), value, /*is_param=*/false);
  return graph.insertGetAttr(graph.inputs()[0], name);
}

}  // namespace

std::optional<std::string> attribute_path(const Value* value, const Value* self) {
  if (value == self) return std::string();
  const Node* n = value->node();
  if (n->kind() != c10::prim::GetAttr) return std::nullopt;
  auto parent = attribute_path(n->input(), self);
  if (!parent) return std::nullopt;
  const std::string name = n->s(c10::attr::name);
  return parent->empty() ? name : *parent + "." + name;
}

torch::jit::Module with_fake_quantization(const torch::jit::Module& original, const std::string& method,
                                          const std::vector<LayerFakeQuant>& layers) {
  torch::jit::Module module = original.clone();
  auto& function = torch::jit::toGraphFunction(module.get_method(method).function());
  std::shared_ptr<Graph> graph = function.graph();
  torch::jit::Inline(*graph);
  const Value* self = graph->inputs()[0];
  std::map<std::string, std::vector<Node*>> weight_reads;
  collect_weight_reads(graph->block(), self, weight_reads);

  for (const auto& layer : layers) {
    auto found = weight_reads.find(layer.layer);
    if (found == weight_reads.end())
      throw ModelError("layer '" + layer.layer + "': its weight is not read by " + method +
                       " (the layer is unused, or the method reaches it in a way qforge cannot rewrite)");
    for (Node* read : found->second) {
      Value* weight = read->output();
      Value* quantized = weight;
      WithInsertPoint after_read(read->next());
      if (layer.weight) {
        const auto& q = *layer.weight;
        Value* scale = add_tensor_attribute(module, *graph, attribute_name(layer.layer, "weight_scale"), q.qparams.scale);
        Value* zero = add_tensor_attribute(module, *graph, attribute_name(layer.layer, "weight_zero_point"),
                                           q.qparams.zero_point);
        Value* rows = weight;
        if (!q.view_shape.empty())  // groups: quantize the [out*groups, group_size] view per row
          rows = graph->insert(c10::aten::reshape, {weight, c10::IValue(q.view_shape)});
        if (q.axis < 0)
          quantized = graph->insert(c10::Symbol::aten("fake_quantize_per_tensor_affine"),
                                    {rows, scale, zero, layer.weight_range.qmin, layer.weight_range.qmax});
        else
          quantized = graph->insert(c10::Symbol::aten("fake_quantize_per_channel_affine"),
                                    {rows, scale, zero, q.axis, layer.weight_range.qmin, layer.weight_range.qmax});
        if (!q.view_shape.empty()) {
          Value* shape = graph->insert(c10::aten::size, {weight});
          quantized = graph->insert(c10::aten::reshape, {quantized, shape});
        }
        weight->replaceAllUsesAfterNodeWith(quantized->node(), quantized);
      }
      if (!layer.input) continue;
      const auto uses = quantized->uses();  // a copy: the loop edits the graph
      for (const auto& use : uses) {
        Node* user = use.user;
        if (!consumes_activation(user) || use.offset != 1) continue;
        WithInsertPoint before_user(user);
        Value* scale = add_tensor_attribute(module, *graph, attribute_name(layer.layer, "input_scale"), layer.input->scale);
        Value* zero = add_tensor_attribute(module, *graph, attribute_name(layer.layer, "input_zero_point"),
                                           layer.input->zero_point);
        Value* x = graph->insert(c10::Symbol::aten("fake_quantize_per_tensor_affine"),
                                 {user->input(0), scale, zero, layer.input_range.qmin, layer.input_range.qmax});
        user->replaceInput(0, x);
      }
    }
  }
  torch::jit::EliminateDeadCode(graph);
  return module;
}

}  // namespace qforge
