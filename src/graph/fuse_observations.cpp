#include "graph/fuse_observations.h"

#include <torch/csrc/jit/ir/alias_analysis.h>
#include <torch/csrc/jit/ir/constants.h>

#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace qforge {
namespace {

using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

struct Clamp {
  double lower, upper;
  bool inplace;
};

// The bounds of a ReLU, ReLU6 or hardtanh (with constant bounds) on a tensor.
std::optional<Clamp> clamp_of(const Node* n) {
  const std::string kind = n->kind().toQualString();
  const bool inplace = !kind.empty() && kind.back() == '_';
  const std::string op = inplace ? kind.substr(0, kind.size() - 1) : kind;
  if (n->inputs().empty() || n->input(0)->type()->kind() != c10::TypeKind::TensorType) return std::nullopt;
  if (op == "aten::relu" && n->inputs().size() == 1) return Clamp{0, std::numeric_limits<double>::infinity(), inplace};
  if (op == "aten::relu6" && n->inputs().size() == 1) return Clamp{0, 6, inplace};
  if (op != "aten::hardtanh" || n->inputs().size() != 3) return std::nullopt;
  const auto lower = torch::jit::toIValue(n->input(1)), upper = torch::jit::toIValue(n->input(2));
  if (!lower || !upper || !lower->isScalar() || !upper->isScalar()) return std::nullopt;
  return Clamp{lower->toScalar().toDouble(), upper->toScalar().toDouble(), inplace};
}

// Whether the clamp computing the site's tensor can observe it: the site
// comes after it in its block, and no node between them writes the tensor
// (the clamp would otherwise see other values than the site).
bool clamp_can_observe(const Node* clamp, const ObservationSite& site, const torch::jit::AliasDb& aliases) {
  if (site.before->owningBlock() != clamp->owningBlock() || !clamp->isBefore(site.before)) return false;
  for (const Node* n = clamp->next(); n != site.before; n = n->next())
    if (aliases.writesToAlias(const_cast<Node*>(n), {site.tensor})) return false;
  return true;
}

bool inside_loop(const Node* n) {
  for (const Node* owner = n->owningBlock()->owningNode(); owner; owner = owner->owningBlock()->owningNode())
    if (owner->kind() == c10::prim::Loop) return true;
  return false;
}

// Whether a node other than the tensor's producer writes its memory after
// the observation made just before `observed_at` (or, for a clamp that
// observes, by it) runs: work reading the tensor beside the computing stream
// would race that write. Inside a loop any such writer counts, since its
// next iteration comes after.
bool written_after(const Value* tensor, const Node* observed_at, const Graph& graph,
                   const torch::jit::AliasDb& aliases) {
  if (!aliases.hasWriters(tensor)) return false;
  const bool any_writer = inside_loop(observed_at);
  const std::function<bool(const torch::jit::Block*)> writes = [&](const torch::jit::Block* block) {
    for (const Node* n : block->nodes()) {
      if (!n->blocks().empty()) {
        for (const auto* inner : n->blocks())
          if (writes(inner)) return true;
      } else if (n != tensor->node() && (any_writer || n == observed_at || observed_at->isBefore(n)) &&
                 aliases.writesToAlias(const_cast<Node*>(n), {tensor})) {
        return true;
      }
    }
    return false;
  };
  return writes(graph.block());
}

void insert_observe(Graph& graph, const ObservationSite& site, bool written_later) {
  static const auto observe = c10::Symbol::fromQualString("qforge::observe");
  torch::jit::WithInsertPoint at(site.before);
  Value* id = graph.insertConstant(site.point);
  Value* written = graph.insertConstant(written_later);
  graph.insertNode(graph.create(observe, {site.tensor, id, written}, 0));
}

void replace_with_observed_clamp(Graph& graph, Node* clamp, const std::vector<int64_t>& points, bool written_later) {
  static const auto observed_clamp = c10::Symbol::fromQualString("qforge::observed_clamp");
  const Clamp bounds = *clamp_of(clamp);
  torch::jit::WithInsertPoint at(clamp);
  Value* y = graph.insert(observed_clamp,
                          {clamp->input(0), c10::IValue(points), c10::IValue(bounds.lower), c10::IValue(bounds.upper),
                           c10::IValue(bounds.inplace), c10::IValue(written_later)});
  // copyMetadata, not the inline setType: under UBSan that needs the type info
  // of c10::DynamicType, which LibTorch does not export.
  y->copyMetadata(clamp->output());
  clamp->output()->replaceAllUsesWith(y);
  clamp->destroy();
}

}  // namespace

int insert_observations(const std::shared_ptr<Graph>& graph, const std::vector<ObservationSite>& sites,
                        ObserveFusion fusion) {
  // Decided on the graph without observation ops, whose conservative alias
  // analysis would make every observed tensor alias every other.
  struct ObservingClamp {
    Node* clamp;
    std::vector<int64_t> points;
    bool written_later;
  };
  std::vector<ObservingClamp> clamps;  // in site order
  std::map<Node*, size_t> clamp_index;
  std::vector<std::pair<const ObservationSite*, bool>> apart;  // each site and whether it is written later
  {
    const torch::jit::AliasDb aliases(graph);
    for (const auto& site : sites) {
      Node* producer = site.tensor->node();
      if (fusion != ObserveFusion::IntoClamps || !clamp_of(producer) || !clamp_can_observe(producer, site, aliases)) {
        apart.emplace_back(&site, written_after(site.tensor, site.before, *graph, aliases));
        continue;
      }
      const auto [at, fresh] = clamp_index.emplace(producer, clamps.size());
      if (fresh) clamps.push_back({producer, {}, written_after(site.tensor, producer, *graph, aliases)});
      clamps[at->second].points.push_back(site.point);
    }
  }
  for (const auto& [site, written_later] : apart) insert_observe(*graph, *site, written_later);
  for (const auto& c : clamps) replace_with_observed_clamp(*graph, c.clamp, c.points, c.written_later);
  return static_cast<int>(clamps.size());
}

}  // namespace qforge
