// Which layers a compile prunes, how, and why the others stay dense:
// pruning_settings with the per-layer `pruning` overrides applied.
#pragma once
#include <string>
#include <vector>

#include "qforge/compile.h"

namespace qforge {

// Sets plan.pruning (or plan.dense_reason) of every plan. `keys`: the
// layer_quantization_settings keys matching each plan's layer, least specific
// first (plan.matched). A layer the overrides name on purpose that cannot be
// pruned (an embedding, a tied weight, an N:M pattern its inputs do not
// divide into) is a ConfigError naming the key; matched only by the global
// settings, it stays dense with the reason.
// With method structured no layer is pruned on its own: plans keep no pruning.
void plan_pruning(std::vector<LayerPlan>& plans, const std::vector<LayerInfo>& layers, const ExperimentConfig& config);

// Structured pruning of one layer's channel groups: the share of channels to
// remove, or why the layer's channels must stay; `named_by`: the
// layer_quantization_settings key that asks for it (empty: the global settings).
struct ChannelPlan {
  double sparsity = 0;
  std::string keep_whole;
  std::string named_by;
};
ChannelPlan plan_channel_pruning(const LayerPlan& plan, const std::vector<LayerInfo>& layers,
                                 const ExperimentConfig& config);

}  // namespace qforge
