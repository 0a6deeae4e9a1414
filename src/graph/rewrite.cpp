#include "graph/rewrite.h"

#include <torch/csrc/jit/api/function_impl.h>

#include <set>

#include "graph/decompose_attention.h"
#include "graph/fake_quant_graph.h"
#include "graph/inline_calls.h"
#include "graph/model.h"
#include "qforge/errors.h"

namespace qforge {
namespace {

using torch::jit::Node;
using torch::jit::Value;

void collect_weight_reads(torch::jit::Block* block, const Value* self, std::map<std::string, std::vector<Node*>>& out) {
  for (Node* n : block->nodes()) {
    for (auto* inner : n->blocks()) collect_weight_reads(inner, self, out);
    if (n->kind() != c10::prim::GetAttr || n->s(c10::attr::name) != "weight") continue;
    if (auto path = attribute_path(n->input(), self)) out[*path].push_back(n);
  }
}

torch::jit::Module clone_without_grad(const torch::jit::Module& original) {
  torch::NoGradGuard no_grad;
  return clone_module(original);
}

}  // namespace

Rewrite::Rewrite(const torch::jit::Module& original, const std::string& method) : module(clone_without_grad(original)) {
  graph = torch::jit::toGraphFunction(module.get_method(method).function()).graph();
  inline_calls(*graph);
  decompose_fused_attention(*graph);
  weight_reads = weight_reads_of(*graph);
}

std::map<std::string, std::vector<Node*>> weight_reads_of(torch::jit::Graph& graph) {
  std::map<std::string, std::vector<Node*>> out;
  collect_weight_reads(graph.block(), graph.inputs()[0], out);
  return out;
}

const std::vector<Node*>& Rewrite::reads_of(const std::string& layer, const std::string& method) const {
  auto found = weight_reads.find(layer);
  if (found == weight_reads.end())
    throw ModelError("layer '" + layer + "': its weight is not read by " + method +
                     " (the layer is unused, or the method reaches it in a way qforge cannot rewrite)");
  return found->second;
}

bool consumes_activation(const Node* n) {
  static const std::set<std::string> ops = {"aten::linear",           "aten::conv1d",          "aten::conv2d",
                                            "aten::conv3d",           "aten::_convolution",    "aten::conv_transpose1d",
                                            "aten::conv_transpose2d", "aten::conv_transpose3d"};
  return ops.count(n->kind().toQualString()) > 0;
}

std::vector<Node*> activation_users(Value* weight) {
  std::vector<Node*> out;
  for (const auto& use : weight->uses())
    if (consumes_activation(use.user) && use.offset == 1) out.push_back(use.user);
  return out;
}

}  // namespace qforge
