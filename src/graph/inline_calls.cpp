#include "graph/inline_calls.h"

#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/runtime/graph_executor.h>

#include <set>

namespace qforge {
namespace {

void collect_calls(const torch::jit::Block* block, std::set<const torch::jit::Node*>& calls) {
  for (const auto* n : block->nodes()) {
    if (n->kind() == c10::prim::CallMethod || n->kind() == c10::prim::CallFunction) calls.insert(n);
    for (const auto* b : n->blocks()) collect_calls(b, calls);
  }
}

std::set<const torch::jit::Node*> calls_in(const torch::jit::Graph& graph) {
  std::set<const torch::jit::Node*> calls;
  collect_calls(graph.block(), calls);
  return calls;
}

}  // namespace

void inline_calls(torch::jit::Graph& graph) {
  // Callees made while the guard is on come inlined and cleaned up (constants
  // propagated), as the graphs the rewrites and the converter were written for.
  const torch::jit::GraphOptimizerEnabledGuard optimized_callees(true);
  for (auto calls = calls_in(graph); !calls.empty();) {
    torch::jit::Inline(graph);
    auto left = calls_in(graph);
    if (left == calls) break;  // what is left cannot be inlined (not a graph function)
    calls = std::move(left);
  }
}

}  // namespace qforge
