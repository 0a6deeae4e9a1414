#include "graph/transposed_linear.h"

#include <torch/csrc/jit/ir/ir.h>

#include <map>
#include <set>

#include "graph/module_tensors.h"

namespace qforge {
namespace {

using torch::jit::Node;
using torch::jit::Value;

const c10::ClassType* owner_type(const Value* v) { return v->type()->cast<c10::ClassType>().get(); }

bool reads_attribute(const Value* v, const char* name) {
  return v->node()->kind() == c10::prim::GetAttr && v->node()->s(c10::attr::name) == name;
}

bool is_one(const Value* v) {
  const auto c = torch::jit::toIValue(v);
  return c && ((c->isInt() && c->toInt() == 1) || (c->isDouble() && c->toDouble() == 1.0));
}

// addmm(self.bias, x, self.weight, beta=1, alpha=1): x·W + b with W [in, out].
bool is_transposed_linear(const Node* n) {
  if (n->kind() != c10::aten::addmm || n->inputs().size() != 5) return false;
  const Value* weight = n->input(2);
  const Value* bias = n->input(0);
  return reads_attribute(weight, "weight") && reads_attribute(bias, "bias") &&
         weight->node()->input() == bias->node()->input() && is_one(n->input(3)) && is_one(n->input(4));
}

}  // namespace

std::vector<std::string> linears_from_transposed_layers(torch::jit::Module& module) {
  // Every read of a module type's weight, and the addmm nodes among them.
  std::map<const c10::ClassType*, std::vector<Node*>> addmms;
  std::set<const c10::ClassType*> read_otherwise;
  edit_every_graph(module, [&](Node* n) {
    if (n->kind() != c10::prim::GetAttr || n->s(c10::attr::name) != "weight") return;
    const c10::ClassType* type = owner_type(n->input());
    if (!type) return;
    for (const auto& use : n->output()->uses()) {
      if (use.offset == 2 && is_transposed_linear(use.user))
        addmms[type].push_back(use.user);
      else
        read_otherwise.insert(type);
    }
  });
  std::set<const c10::ClassType*> types;
  for (const auto& [type, nodes] : addmms)
    if (!read_otherwise.count(type)) types.insert(type);
  std::vector<std::string> changed;
  if (types.empty()) return changed;
  for (const auto& item : module.named_modules()) {
    if (!types.count(item.value.type().get())) continue;
    torch::jit::Module layer = item.value;
    const at::Tensor w = layer.attr("weight").toTensor();
    const c10::IValue bias = layer.attr("bias");
    if (w.dim() != 2 || !bias.isTensor() || bias.toTensor().dim() != 1 || bias.toTensor().size(0) != w.size(1)) {
      types.erase(item.value.type().get());  // a shape the rewrite would not keep
      continue;
    }
    changed.push_back(item.name);
  }
  for (const auto& item : module.named_modules()) {
    if (!types.count(item.value.type().get())) continue;
    torch::jit::Module layer = item.value;
    torch::NoGradGuard no_grad;
    const at::Tensor w = layer.attr("weight").toTensor();
    layer.setattr("weight", w.t().contiguous().requires_grad_(w.requires_grad()));
  }
  for (const auto* type : types)
    for (Node* addmm : addmms.at(type)) {
      torch::jit::WithInsertPoint here(addmm);
      Value* linear =
          addmm->owningGraph()->insert(c10::aten::linear, {addmm->input(1), addmm->input(2), addmm->input(0)});
      linear->node()->copyMetadata(addmm);
      addmm->output()->replaceAllUsesWith(linear);
      addmm->destroy();
    }
  module = module.clone(/*inplace=*/true);
  return changed;
}

}  // namespace qforge
