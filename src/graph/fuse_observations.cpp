#include "graph/fuse_observations.h"

#include <torch/csrc/jit/ir/alias_analysis.h>
#include <torch/csrc/jit/ir/constants.h>

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
  if (n->inputs().empty() || !n->input(0)->type()->cast<c10::TensorType>()) return std::nullopt;
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

void insert_observe(Graph& graph, const ObservationSite& site) {
  static const auto observe = c10::Symbol::fromQualString("qforge::observe");
  torch::jit::WithInsertPoint at(site.before);
  Value* id = graph.insertConstant(site.point);
  graph.insertNode(graph.create(observe, {site.tensor, id}, 0));
}

void replace_with_observed_clamp(Graph& graph, Node* clamp, const std::vector<int64_t>& points) {
  static const auto observed_clamp = c10::Symbol::fromQualString("qforge::observed_clamp");
  const Clamp bounds = *clamp_of(clamp);
  torch::jit::WithInsertPoint at(clamp);
  Value* y = graph.insert(observed_clamp, {clamp->input(0), c10::IValue(points), c10::IValue(bounds.lower),
                                           c10::IValue(bounds.upper), c10::IValue(bounds.inplace)});
  y->setType(clamp->output()->type());
  clamp->output()->replaceAllUsesWith(y);
  clamp->destroy();
}

}  // namespace

int insert_observations(const std::shared_ptr<Graph>& graph, const std::vector<ObservationSite>& sites,
                        ObserveFusion fusion) {
  // Decided on the graph without observation ops, whose conservative alias
  // analysis would make every observed tensor alias every other.
  std::vector<std::pair<Node*, std::vector<int64_t>>> clamps;  // each observing clamp and its points, in site order
  std::map<Node*, size_t> clamp_index;
  std::vector<const ObservationSite*> apart;
  {
    const auto aliases = fusion == ObserveFusion::IntoClamps ? std::make_unique<torch::jit::AliasDb>(graph) : nullptr;
    for (const auto& site : sites) {
      Node* producer = site.tensor->node();
      if (!aliases || !clamp_of(producer) || !clamp_can_observe(producer, site, *aliases)) {
        apart.push_back(&site);
        continue;
      }
      const auto [at, fresh] = clamp_index.emplace(producer, clamps.size());
      if (fresh) clamps.emplace_back(producer, std::vector<int64_t>());
      clamps[at->second].second.push_back(site.point);
    }
  }
  for (const ObservationSite* site : apart) insert_observe(*graph, *site);
  for (const auto& [clamp, points] : clamps) replace_with_observed_clamp(*graph, clamp, points);
  return static_cast<int>(clamps.size());
}

}  // namespace qforge
