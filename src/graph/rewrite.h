// The starting point of every graph rewrite: a clone of the module with the
// method's graph inlined (every layer's weight then appears as a chain of
// prim::GetAttr from self, which names the layer instance), its fused
// attention written as its pieces, and where that graph reads each layer's
// weight. Rewrites edit the clone's fresh graph: a graph that has already run
// keeps its compiled plan, so it cannot be edited in place.
#pragma once
#include <torch/csrc/jit/ir/ir.h>
#include <torch/script.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace qforge {

struct Rewrite {
  torch::jit::Module module;
  std::shared_ptr<torch::jit::Graph> graph;
  std::map<std::string, std::vector<torch::jit::Node*>> weight_reads;  // layer -> its prim::GetAttr "weight" nodes

  // Cloned without autograd: the copies are leaves that require no gradient
  // (a clone under grad mode would hang them on the original's graph).
  Rewrite(const torch::jit::Module& original, const std::string& method);

  // ModelError naming the layer when the method does not read its weight.
  const std::vector<torch::jit::Node*>& reads_of(const std::string& layer, const std::string& method) const;
};

// Every layer's prim::GetAttr "weight" nodes in `graph` (input 0: the module).
std::map<std::string, std::vector<torch::jit::Node*>> weight_reads_of(torch::jit::Graph& graph);

// Ops whose input 0 is the activation a weight (input 1) multiplies: linear, convolutions.
bool consumes_activation(const torch::jit::Node* n);

// The linear/conv nodes that multiply `weight` with an activation (their input 0).
std::vector<torch::jit::Node*> activation_users(torch::jit::Value* weight);

}  // namespace qforge
