#include "graph/fold_attributes.h"

#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "graph/fake_quant_graph.h"
#include "graph/model.h"

namespace qforge {
namespace {

bool is_plain(const c10::IValue& v) { return v.isBool() || v.isInt() || v.isDouble() || v.isString() || v.isNone(); }

void collect(torch::jit::Block* block, c10::Symbol kind, std::vector<torch::jit::Node*>& out) {
  for (torch::jit::Node* n : block->nodes()) {
    for (auto* inner : n->blocks()) collect(inner, kind, out);
    if (n->kind() == kind) out.push_back(n);
  }
}

// "owner.name" of an attribute node reads or writes, or nullopt when it is not reached from self.
std::optional<std::string> attribute_of(const torch::jit::Node* n, const torch::jit::Value* self) {
  const auto owner = attribute_path(n->input(0), self);
  if (!owner) return std::nullopt;
  return *owner + "." + n->s(c10::attr::name);
}

}  // namespace

void fold_plain_attributes(std::shared_ptr<torch::jit::Graph>& graph, const torch::jit::Module& module) {
  const torch::jit::Value* self = graph->inputs()[0];
  std::vector<torch::jit::Node*> reads, writes;
  collect(graph->block(), c10::prim::GetAttr, reads);
  collect(graph->block(), c10::prim::SetAttr, writes);
  std::set<std::string> written;  // attributes the method changes (a counter) keep being read
  for (const torch::jit::Node* n : writes)
    if (const auto name = attribute_of(n, self)) written.insert(*name);
  for (torch::jit::Node* n : reads) {
    const auto owner = attribute_path(n->input(), self);
    const std::string name = n->s(c10::attr::name);
    if (!owner || written.count(*owner + "." + name)) continue;
    const torch::jit::Module m = owner->empty() ? module : submodule(module, *owner, "the model");
    if (!m.hasattr(name)) continue;
    const c10::IValue value = m.attr(name);
    if (!is_plain(value)) continue;
    torch::jit::WithInsertPoint guard(n);
    n->output()->replaceAllUsesWith(graph->insertConstant(value));
  }
  torch::jit::ConstantPropagation(graph);
  torch::jit::EliminateDeadCode(graph);
}

}  // namespace qforge
