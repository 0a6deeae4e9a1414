#include "prune/prune_allocation.h"

#include <cmath>

#include "util/text.h"

namespace qforge {
namespace {

constexpr size_t kLowered = 4;  // candidates [1, 4]: less than planned, 4 = dense

bool raised(size_t candidate) { return candidate > kLowered; }

std::string share(double s) { return fixed(100.0 * s, 1) + "%"; }

}  // namespace

std::vector<LayerPruning> sparsity_candidates(const LayerPruning& planned) {
  std::vector<LayerPruning> out = {planned};
  const auto with = [&](double s) {
    LayerPruning p = planned;
    p.sparsity = s;
    p.n = p.m = 0;
    return p;
  };
  if (planned.m > 0) return {planned, with(0.0)};
  for (double f : {0.75, 0.5, 0.25, 0.0}) out.push_back(with(planned.sparsity * f));
  for (double f : {0.25, 0.5}) out.push_back(with(planned.sparsity + (1.0 - planned.sparsity) * f));
  return out;
}

SparsityAllocation allocate_within_threshold(const std::vector<SparsityChoice>& layers, double threshold,
                                             const AllocationWords& words) {
  SparsityAllocation out;
  std::vector<size_t> at(layers.size(), 0);
  double shortfall = 0;  // weights planned to be pruned that are kept
  for (size_t k = 0; k < layers.size(); ++k) {
    const auto& l = layers[k];
    while (at[k] < l.candidates.size() && !raised(at[k]) && l.errors[at[k]] > threshold) ++at[k];
    if (at[k] >= l.candidates.size() || raised(at[k])) at[k] = l.candidates.size() > 2 ? kLowered : 1;  // dense
    if (at[k] == 0) continue;
    shortfall += static_cast<double>(l.weights) * (l.candidates[0].sparsity - l.candidates[at[k]].sparsity);
    out.notes.push_back("pruning: " + words.unit + " '" + l.layer + "' errs " + fixed(l.errors[0], 4) + " at sparsity " +
                        share(l.candidates[0].sparsity) + ", above sensitivity_threshold " + fixed(threshold, 4) +
                        ": pruned to " + share(l.candidates[at[k]].sparsity));
  }
  while (shortfall > 0) {  // the layer whose next step up errs least takes it
    size_t best = layers.size();
    for (size_t k = 0; k < layers.size(); ++k) {
      const size_t next = at[k] == 0 ? kLowered + 1 : at[k] + 1;
      if ((at[k] != 0 && !raised(at[k])) || next >= layers[k].candidates.size()) continue;
      if (layers[k].errors[next] > threshold) continue;
      if (best == layers.size() ||
          layers[k].errors[next] < layers[best].errors[at[best] == 0 ? kLowered + 1 : at[best] + 1])
        best = k;
    }
    if (best == layers.size()) break;
    const size_t next = at[best] == 0 ? kLowered + 1 : at[best] + 1;
    shortfall -= static_cast<double>(layers[best].weights) *
                 (layers[best].candidates[next].sparsity - layers[best].candidates[at[best]].sparsity);
    at[best] = next;
  }
  int64_t planned_weights = 0;
  for (size_t k = 0; k < layers.size(); ++k) {
    out.chosen.push_back(layers[k].candidates[at[k]]);
    planned_weights += layers[k].weights;
    if (raised(at[k]))
      out.notes.push_back("pruning: " + words.unit + " '" + layers[k].layer + "' pruned to " +
                          share(layers[k].candidates[at[k]].sparsity) + " (errs " + fixed(layers[k].errors[at[k]], 4) +
                          ") for the weights " + words.others + " keep");
  }
  if (shortfall > 0.5)
    out.notes.push_back("pruning: " + share(shortfall / static_cast<double>(std::max<int64_t>(planned_weights, 1))) +
                        " of the weights of " +
                        (words.scope.empty() ? "the step of '" + layers.front().layer + "'" : words.scope) +
                        " stay that the plan prunes: " + words.none + " could take them below sensitivity_threshold");
  return out;
}

}  // namespace qforge
