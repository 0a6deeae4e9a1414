#include "graph/block_segments.h"

#include <torch/csrc/jit/api/function_impl.h>

#include <algorithm>
#include <functional>
#include <set>
#include <stdexcept>
#include <unordered_map>

#include "graph/fake_quant_graph.h"
#include "graph/inline_calls.h"
#include "graph/model.h"

namespace qforge {
namespace {

using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

bool contains_a_block(const std::string& path, const std::vector<std::string>& blocks) {
  return std::any_of(blocks.begin(), blocks.end(),
                     [&](const std::string& b) { return path.empty() || b.rfind(path + ".", 0) == 0; });
}

bool is_block(const std::string& path, const std::vector<std::string>& blocks) {
  return std::find(blocks.begin(), blocks.end(), path) != blocks.end();
}

std::optional<std::string> called_module(const Node* n, const Value* self) {
  if (n->kind() != c10::prim::CallMethod) return std::nullopt;
  return attribute_path(n->input(0), self);
}

// Inlines the calls of modules that hold a block (a model's `self.model(...)`,
// its own helper methods) until every block's call is a node of the graph.
void expose_block_calls(Graph& graph, const std::vector<std::string>& blocks) {
  const Value* self = graph.inputs()[0];
  for (bool inlined = true; inlined;) {
    inlined = false;
    for (Node* n : graph.nodes()) {
      const auto path = called_module(n, self);
      if (!path || is_block(*path, blocks) || !contains_a_block(*path, blocks)) continue;
      auto& callee =
          torch::jit::toGraphFunction(n->input(0)->type()->expect<c10::ClassType>()->getMethod(n->s(c10::attr::name)));
      // The callee's own graph: its optimized one has the block calls inlined
      // already (nn.Sequential's forward), and they would be lost.
      torch::jit::inlineCallTo(n, &callee, callee.graph().get());
      inlined = true;
      break;  // the node list changed
    }
  }
}

void find_nested_block_calls(const torch::jit::Block* block, const Value* self, const std::vector<std::string>& blocks,
                             std::string& found) {
  for (const Node* n : block->nodes())
    for (const auto* inner : n->blocks()) {
      for (const Node* m : inner->nodes()) {
        const auto path = called_module(m, self);
        if (path && is_block(*path, blocks) && found.empty()) found = *path;
      }
      find_nested_block_calls(inner, self, blocks, found);
    }
}

// Values a segment can make again from the module rather than receive: constants and attributes.
bool rematerializable(const Value* v, const Value* self) {
  const Node* n = v->node();
  if (n->kind() == c10::prim::Constant) return true;
  return n->kind() == c10::prim::GetAttr && (n->input() == self || rematerializable(n->input(), self));
}

struct Cut {
  std::vector<Node*> nodes;  // the graph's top-level nodes
  std::unordered_map<const Node*, size_t> index;
  std::vector<size_t> block_calls;  // index of each block's call, increasing
  // The segment of a top-level position: segment j ends with block j's call.
  size_t segment_at(size_t position) const {
    return static_cast<size_t>(std::lower_bound(block_calls.begin(), block_calls.end(), position) -
                               block_calls.begin());
  }
  size_t segment_of_user(const Node* user, const torch::jit::Block* top) const {
    while (user->owningBlock() != top) user = user->owningBlock()->owningNode();
    const auto found = index.find(user);
    return segment_at(found == index.end() ? nodes.size() : found->second);  // the return node: after every node
  }
};

// The values segment j passes on: made in segments up to j (or arguments of
// the method), read after it, and not made again from the module.
std::vector<Value*> carried_after(Graph& graph, const Cut& cut, size_t j) {
  const Value* self = graph.inputs()[0];
  std::vector<Value*> out;
  const auto read_later = [&](Value* v) {
    return std::any_of(v->uses().begin(), v->uses().end(),
                       [&](const torch::jit::Use& u) { return cut.segment_of_user(u.user, graph.block()) > j; });
  };
  for (size_t i = 1; i < graph.inputs().size(); ++i)
    if (read_later(graph.inputs()[i])) out.push_back(graph.inputs()[i]);
  for (size_t i = 0; i < cut.nodes.size() && cut.segment_at(i) <= j; ++i)
    for (Value* v : cut.nodes[i]->outputs())
      if (!rematerializable(v, self) && read_later(v)) out.push_back(v);
  return out;
}

// Segment j as a graph of its own: `inputs` become its arguments after self.
std::shared_ptr<Graph> segment_graph(Graph& graph, const Cut& cut, size_t j, const std::vector<Value*>& inputs,
                                     const std::vector<Value*>* passed_on) {
  auto g = std::make_shared<Graph>();
  std::unordered_map<Value*, Value*> env;
  Value* self = graph.inputs()[0];
  env[self] = g->addInput()->copyMetadata(self);
  for (Value* v : inputs) env[v] = g->addInput()->copyMetadata(v);
  std::function<Value*(Value*)> map = [&](Value* v) -> Value* {
    if (auto found = env.find(v); found != env.end()) return found->second;
    // A constant or an attribute made in an earlier segment: made again here.
    if (!rematerializable(v, self))
      throw std::logic_error("block segments: value %" + v->debugName() + " not passed on");
    Node* copy = g->insertNode(g->createClone(v->node(), map));
    for (size_t k = 0; k < copy->outputs().size(); ++k) env[v->node()->output(k)] = copy->output(k);
    return env.at(v);
  };
  const size_t begin = j == 0 ? 0 : cut.block_calls[j - 1] + 1;
  const size_t end = j < cut.block_calls.size() ? cut.block_calls[j] + 1 : cut.nodes.size();
  for (size_t i = begin; i < end; ++i) {
    Node* copy = g->insertNode(g->createClone(cut.nodes[i], map));
    for (size_t k = 0; k < copy->outputs().size(); ++k) env[cut.nodes[i]->output(k)] = copy->output(k);
  }
  if (!passed_on) {
    for (Value* out : graph.outputs()) g->registerOutput(map(out));
    return g;
  }
  std::vector<Value*> values;
  for (Value* v : *passed_on) values.push_back(map(v));
  g->registerOutput(g->insertNode(g->createTuple(values))->output());
  return g;
}

// The layers whose weight a segment reads, through every call it makes.
std::set<std::string> layers_read(Graph& segment) {
  auto inlined = segment.copy();
  inline_calls(*inlined);
  std::set<std::string> out;
  std::function<void(const torch::jit::Block*)> visit = [&](const torch::jit::Block* b) {
    for (const Node* n : b->nodes()) {
      for (const auto* inner : n->blocks()) visit(inner);
      if (n->kind() == c10::prim::GetAttr && n->s(c10::attr::name) == "weight")
        if (auto path = attribute_path(n->input(), inlined->inputs()[0])) out.insert(*path);
    }
  };
  visit(inlined->block());
  return out;
}

// Where each block is called, or why the graph cannot be cut there.
std::variant<Cut, std::string> cut_at_blocks(Graph& graph, const std::vector<std::string>& blocks) {
  const Value* self = graph.inputs()[0];
  std::string nested;
  find_nested_block_calls(graph.block(), self, blocks, nested);
  if (!nested.empty()) return "block '" + nested + "' is called inside a loop or a branch";
  Cut cut;
  std::map<std::string, size_t> call_of;
  for (Node* n : graph.nodes()) {
    cut.index[n] = cut.nodes.size();
    if (const auto path = called_module(n, self); path && is_block(*path, blocks)) {
      if (call_of.count(*path)) return "block '" + *path + "' is called more than once";
      call_of[*path] = cut.nodes.size();
    }
    cut.nodes.push_back(n);
  }
  for (const auto& b : blocks) {
    if (!call_of.count(b)) return "block '" + b + "' is not called as a module";
    if (!cut.block_calls.empty() && call_of[b] < cut.block_calls.back())
      return "block '" + b + "' is called before the block defined ahead of it";
    cut.block_calls.push_back(call_of[b]);
  }
  return cut;
}

}  // namespace

std::variant<BlockSegments, std::string> split_at_blocks(const torch::jit::Module& model, const std::string& method,
                                                         const std::vector<std::string>& blocks) {
  BlockSegments out;
  {
    torch::NoGradGuard no_grad;  // the clone's tensors are leaves, as the model's
    out.module = clone_module(model);
  }
  const torch::jit::Method forward_method = out.module.get_method(method);
  const auto& forward = torch::jit::toGraphFunction(forward_method.function());
  auto graph = forward.graph()->copy();
  expose_block_calls(*graph, blocks);
  auto cut_or_why = cut_at_blocks(*graph, blocks);
  if (auto* why = std::get_if<std::string>(&cut_or_why)) return *why;
  const Cut& cut = std::get<Cut>(cut_or_why);

  std::map<std::string, std::set<size_t>> segments_reading;  // layer -> segments
  std::vector<Value*> inputs(graph->inputs().begin() + 1, graph->inputs().end());
  for (size_t j = 0; j <= blocks.size(); ++j) {
    const bool last = j == blocks.size();
    const std::vector<Value*> passed_on = last ? std::vector<Value*>{} : carried_after(*graph, cut, j);
    auto g = segment_graph(*graph, cut, j, inputs, last ? nullptr : &passed_on);
    const std::string name = "qforge_segment_" + std::to_string(j);
    auto* fn = out.module._ivalue()->compilation_unit()->create_function(
        c10::QualifiedName(*out.module.type()->name(), name), g);
    // Segment 0 is called as the method is: its arguments, names and defaults.
    if (j == 0)
      fn->setSchema(
          forward.getSchema().cloneWithName(name, "").cloneWithReturns({c10::Argument("", g->outputs()[0]->type())}));
    out.module.type()->addMethod(fn);
    out.methods.push_back(name);
    for (const auto& layer : layers_read(*g)) segments_reading[layer].insert(j);
    inputs = passed_on;
  }
  for (const auto& [layer, segments] : segments_reading)
    if (segments.size() == 1) out.segment_of_layer[layer] = *segments.begin();
  return out;
}

}  // namespace qforge
