#include "graph/input_scales.h"

#include <torch/csrc/jit/ir/ir.h>

#include <algorithm>
#include <map>
#include <regex>
#include <set>
#include <tuple>

#include "graph/fake_quant_graph.h"
#include "graph/model.h"
#include "graph/rewrite.h"
#include "qforge/errors.h"

namespace qforge {
namespace {

using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

// The graph's reads of every attribute, by dotted path ("blocks.0.norm.weight").
std::map<std::string, int> attribute_reads(torch::jit::Block* block, const Value* self,
                                           std::map<std::string, int> counts = {}) {
  for (Node* n : block->nodes()) {
    for (auto* inner : n->blocks()) counts = attribute_reads(inner, self, std::move(counts));
    if (n->kind() != c10::prim::GetAttr) continue;
    if (auto path = attribute_path(n->output(), self)) ++counts[*path];
  }
  return counts;
}

std::pair<std::string, std::string> split_path(const std::string& path) {
  const auto dot = path.rfind('.');
  if (dot == std::string::npos) return {"", path};
  return {path.substr(0, dot), path.substr(dot + 1)};
}

at::Tensor attribute_tensor(const torch::jit::Module& module, const std::string& path) {
  const auto [owner, name] = split_path(path);
  const torch::jit::Module holder = owner.empty() ? module : submodule(module, owner, "the model");
  if (!holder.hasattr(name)) return {};
  const c10::IValue value = holder.attr(name);
  return value.isTensor() ? value.toTensor() : at::Tensor();
}

// What the analysis needs of one rewrite: the graph, who reads what, and
// which tensors more than one attribute holds (tied).
struct GraphFacts {
  const Rewrite& rewrite;
  const Value* self;
  std::map<std::string, int> reads;
  std::map<const c10::TensorImpl*, int> holders;

  explicit GraphFacts(const Rewrite& r) : rewrite(r), self(r.graph->inputs()[0]) {
    reads = attribute_reads(r.graph->block(), self);
    for (const auto& p : r.module.named_parameters(/*recurse=*/true)) ++holders[p.value.unsafeGetTensorImpl()];
    for (const auto& b : r.module.named_buffers(/*recurse=*/true)) ++holders[b.value.unsafeGetTensorImpl()];
  }

  // The attribute `v` reads, when it is one read once by the graph and held by no other attribute.
  std::optional<std::string> sole_parameter(const Value* v) const {
    auto path = attribute_path(v, self);
    if (!path || path->empty() || reads.count(*path) == 0 || reads.at(*path) != 1) return std::nullopt;
    const at::Tensor t = attribute_tensor(rewrite.module, *path);
    if (!t.defined() || holders.count(t.unsafeGetTensorImpl()) == 0 || holders.at(t.unsafeGetTensorImpl()) != 1)
      return std::nullopt;
    return path;
  }

  // The layer whose weight `linear` (an aten::linear node) multiplies, when
  // that weight is read once, used once, and tied to nothing.
  std::optional<std::string> sole_layer(const Node* linear) const {
    if (linear->kind() != c10::aten::linear) return std::nullopt;
    const Value* weight = linear->input(1);
    if (weight->node()->kind() != c10::prim::GetAttr || weight->node()->s(c10::attr::name) != "weight" ||
        weight->uses().size() != 1 || !sole_parameter(weight))
      return std::nullopt;
    return attribute_path(weight->node()->input(), self);
  }

  // The parameters of a linear layer's output rows: its weight, and its bias when it has one.
  std::vector<std::string> row_parameters(const Node* linear, const std::string& layer) const {
    std::vector<std::string> out = {layer + ".weight"};
    if (auto bias = sole_parameter(linear->input(2))) out.push_back(*bias);
    return out;
  }
};

// Ops that read only a tensor's metadata (x.shape, x.device), which dividing x by s leaves as it is.
bool reads_metadata_only(const Node* n) {
  static const std::set<std::string> ops = {"aten::size",  "aten::dim",    "aten::numel", "aten::len",
                                            "prim::device", "prim::dtype", "prim::shape", "prim::layout"};
  return ops.count(n->kind().toQualString()) > 0;
}

bool is_vector_of(const at::Tensor& t, int64_t channels) {
  return t.defined() && t.dim() == 1 && t.size(0) == channels;
}

// Where x / s can be folded: the parameters to divide, and the module that holds them.
std::pair<std::vector<std::string>, std::string> fold_site(const GraphFacts& facts, Value* x, int64_t channels) {
  const Node* producer = x->node();
  const auto owner = [](const std::string& path) { return split_path(path).first; };
  if (producer->kind() == c10::aten::layer_norm) {  // (input, shape, weight, bias, eps, cudnn)
    const auto weight = facts.sole_parameter(producer->input(2));
    if (!weight || !is_vector_of(attribute_tensor(facts.rewrite.module, *weight), channels)) return {};
    std::vector<std::string> params = {*weight};
    if (auto bias = facts.sole_parameter(producer->input(3)))
      params.push_back(*bias);
    else if (producer->input(3)->type()->kind() != c10::TypeKind::NoneType)
      return {};
    return {params, owner(*weight)};
  }
  if (producer->kind() == c10::aten::mul) {  // an elementwise weight (RMSNorm), or a product with a linear's output
    for (size_t side = 0; side < 2; ++side) {
      if (auto p = facts.sole_parameter(producer->input(side));
          p && is_vector_of(attribute_tensor(facts.rewrite.module, *p), channels))
        return {{*p}, owner(*p)};
    }
    for (size_t side = 0; side < 2; ++side) {
      Value* operand = producer->input(side);
      if (operand->uses().size() != 1) continue;
      if (auto layer = facts.sole_layer(operand->node()))
        return {facts.row_parameters(operand->node(), *layer), *layer};
    }
    return {};
  }
  if (auto layer = facts.sole_layer(producer)) return {facts.row_parameters(producer, *layer), *layer};
  return {};
}

}  // namespace

InputGroups input_groups(const torch::jit::Module& module, const std::string& method,
                         const std::vector<std::string>& wanted) {
  const Rewrite rewrite(module, method);
  const GraphFacts facts(rewrite);
  InputGroups out;
  std::vector<Value*> inputs;  // each group's tensor, in order of first appearance
  for (const auto& layer : wanted) {
    const auto found = rewrite.weight_reads.find(layer);
    if (found == rewrite.weight_reads.end() || found->second.size() != 1) {
      out.refused.emplace_back(layer, "the method reads its weight more than once, or not directly");
      continue;
    }
    const auto users = activation_users(found->second.front()->output());
    if (users.size() != 1 || !facts.sole_layer(users.front())) {
      out.refused.emplace_back(
          layer, "not one aten::linear call on a weight of its own (called twice, tied, or a convolution)");
      continue;
    }
    Value* x = users.front()->input(0);
    if (std::find(inputs.begin(), inputs.end(), x) == inputs.end()) inputs.push_back(x);
  }
  for (Value* x : inputs) {
    InputGroup group;
    bool only_members = true;
    for (const auto& use : x->uses()) {
      if (reads_metadata_only(use.user)) continue;
      auto layer = use.offset == 0 ? facts.sole_layer(use.user) : std::nullopt;
      if (layer) group.layers.push_back(*layer);
      only_members = only_members && layer.has_value();
    }
    group.channels = attribute_tensor(rewrite.module, group.layers.front() + ".weight").size(1);
    if (only_members) std::tie(group.divided_params, group.divided_in) = fold_site(facts, x, group.channels);
    if (group.divided_params.empty()) group.divided_in = "explicit multiply";
    out.groups.push_back(std::move(group));
  }
  return out;
}

torch::jit::Module with_input_scales(const torch::jit::Module& module, const std::string& method,
                                     const std::vector<InputGroup>& groups, const std::vector<at::Tensor>& scales) {
  Rewrite rewrite(module, method);
  Graph& graph = *rewrite.graph;
  torch::jit::Module& clone = rewrite.module;
  const auto set = [&](const std::string& path, const at::Tensor& value) {
    const auto [owner, name] = split_path(path);
    (owner.empty() ? clone : submodule(clone, owner, "the model")).setattr(name, value);
  };
  for (size_t k = 0; k < groups.size(); ++k) {
    const InputGroup& group = groups[k];
    const at::Tensor s = scales[k].detach().to(module_device(clone), at::kFloat);
    for (const auto& layer : group.layers) {
      const at::Tensor w = attribute_tensor(clone, layer + ".weight");
      set(layer + ".weight", (w.to(at::kFloat) * s).to(w.scalar_type()));
    }
    for (const auto& path : group.divided_params) {
      const at::Tensor p = attribute_tensor(clone, path);
      std::vector<int64_t> shape(static_cast<size_t>(p.dim()), 1);
      shape[0] = s.size(0);
      set(path, (p.to(at::kFloat) / s.reshape(shape)).to(p.scalar_type()));
    }
    if (!group.divided_params.empty()) continue;
    // The explicit division, right after x is computed, read by the group's layers only.
    Node* first = activation_users(rewrite.reads_of(group.layers.front(), method).front()->output()).front();
    Value* x = first->input(0);
    const std::string name =
        "_qforge__" + std::regex_replace(group.layers.front(), std::regex("[^A-Za-z0-9_]"), "_") + "__input_divisor";
    clone.register_buffer(name, s);  // moved with the model by Module.to
    torch::jit::WithInsertPoint at(x->node()->kind() == c10::prim::Param ? *graph.block()->nodes().begin()
                                                                         : x->node()->next());
    Value* divided = graph.insert(c10::aten::div, {x, graph.insertGetAttr(graph.inputs()[0], name)});
    for (const auto& layer : group.layers)
      activation_users(rewrite.reads_of(layer, method).front()->output()).front()->replaceInput(0, divided);
  }
  return clone;
}

}  // namespace qforge
