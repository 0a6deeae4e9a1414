#include "graph/fold_attributes.h"

#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>

#include <vector>

#include "graph/fake_quant_graph.h"
#include "graph/model.h"

namespace qforge {
namespace {

bool is_plain(const c10::IValue& v) { return v.isBool() || v.isInt() || v.isDouble() || v.isString() || v.isNone(); }

void collect_reads(torch::jit::Block* block, std::vector<torch::jit::Node*>& out) {
  for (torch::jit::Node* n : block->nodes()) {
    for (auto* inner : n->blocks()) collect_reads(inner, out);
    if (n->kind() == c10::prim::GetAttr) out.push_back(n);
  }
}

}  // namespace

void fold_plain_attributes(std::shared_ptr<torch::jit::Graph>& graph, const torch::jit::Module& module) {
  std::vector<torch::jit::Node*> reads;
  collect_reads(graph->block(), reads);
  for (torch::jit::Node* n : reads) {
    const auto owner = attribute_path(n->input(), graph->inputs()[0]);
    if (!owner) continue;
    const torch::jit::Module m = owner->empty() ? module : submodule(module, *owner, "the model");
    const std::string name = n->s(c10::attr::name);
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
