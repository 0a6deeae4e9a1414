#include "prune/prune_plan.h"

#include <algorithm>

#include "qforge/errors.h"

namespace qforge {
namespace {

struct Wanted {
  PruningSettings settings;
  bool enabled = true;
  std::string named_by;  // the most specific key that sets a pruning field (empty: the global settings)
};

Wanted wanted_for(const LayerPlan& plan, const ExperimentConfig& config) {
  Wanted w{*config.pruning_settings, true, ""};
  for (const auto& key : plan.matched) {
    const PruningOverride& o = config.layer_quantization_settings.at(key).pruning;
    if (o.enabled) w.enabled = *o.enabled;
    if (o.method) w.settings.method = *o.method;
    if (o.sparsity) w.settings.sparsity = *o.sparsity;
    if (o.pattern) w.settings.pattern = *o.pattern;
    if (o.enabled || o.method || o.sparsity || o.pattern) w.named_by = key;
  }
  return w;
}

// Why the layer cannot be pruned as `wanted` says, or empty.
std::string cannot_prune(const LayerPlan& plan, const std::vector<LayerInfo>& layers, const SparsityPattern& pattern) {
  const LayerInfo& layer = plan.layer;
  if (layer.type == "Embedding" || layer.type == "EmbeddingBag")
    return "an embedding table: its rows are tokens, not inputs a pruned weight could make up for";
  if (!layer.shares_weight_with.empty())
    return "its weight is tied to '" + layer.shares_weight_with + "'; pruning it would prune both uses";
  for (const auto& other : layers)
    if (other.shares_weight_with == layer.name)
      return "its weight is tied to '" + other.name + "'; pruning it would prune both uses";
  if (layer.weight_shape.size() < 2) return "its weight has fewer than 2 dimensions";
  const int64_t inputs = layer.weight_shape[1];  // in_features, or in_channels per group
  if (pattern.m > 0 && inputs % pattern.m != 0)
    return std::to_string(inputs) + " input" + (layer.linear ? "s" : " channels per group") +
           " are not a multiple of M=" + std::to_string(pattern.m) + " of pattern " + std::to_string(pattern.n) + ":" +
           std::to_string(pattern.m);
  return "";
}

}  // namespace

std::string LayerPruning::pattern() const {
  return m == 0 ? std::string("unstructured") : std::to_string(n) + ":" + std::to_string(m);
}

ChannelPlan plan_channel_pruning(const LayerPlan& plan, const std::vector<LayerInfo>& layers,
                                 const ExperimentConfig& config) {
  const Wanted w = wanted_for(plan, config);
  const std::string where =
      w.named_by.empty() ? "pruning_settings" : "layer_quantization_settings[" + w.named_by + "].pruning";
  if (!w.enabled) return {0, "pruning disabled by " + where, ""};
  if (const std::string why = cannot_prune(plan, layers, {}); !why.empty()) {
    if (!w.named_by.empty())
      throw ConfigError(where + ": layer '" + plan.layer.name + "' cannot be pruned: " + why +
                        "; set enabled: false there");
    return {0, why, ""};
  }
  if (w.settings.sparsity == 0) return {0, "sparsity 0 by " + where, ""};
  return {w.settings.sparsity, "", w.named_by};
}

void plan_pruning(std::vector<LayerPlan>& plans, const std::vector<LayerInfo>& layers, const ExperimentConfig& config) {
  if (!config.pruning_settings || config.pruning_settings->method == PruningMethod::Structured) return;
  for (auto& plan : plans) {
    const Wanted w = wanted_for(plan, config);
    const std::string where =
        w.named_by.empty() ? "pruning_settings" : "layer_quantization_settings[" + w.named_by + "].pruning";
    if (!w.enabled) {
      plan.dense_reason = "pruning disabled by " + where;
      continue;
    }
    const SparsityPattern pattern = parse_sparsity_pattern(w.settings.pattern, where + ".pattern");
    if (w.settings.method == PruningMethod::SparseGpt && pattern.m > 0 && w.settings.block_size % pattern.m != 0)
      throw ConfigError(where + ".pattern: " + w.settings.pattern +
                        " with sparsegpt needs pruning_settings.block_size (" + std::to_string(w.settings.block_size) +
                        ") to be a multiple of M");
    if (const std::string why = cannot_prune(plan, layers, pattern); !why.empty()) {
      if (!w.named_by.empty())
        throw ConfigError(where + ": layer '" + plan.layer.name + "' cannot be pruned: " + why +
                          "; set enabled: false there");
      plan.dense_reason = why;
      continue;
    }
    LayerPruning p;
    p.method = w.settings.method;
    p.n = pattern.n;
    p.m = pattern.m;
    p.sparsity =
        pattern.m > 0 ? 1.0 - static_cast<double>(pattern.n) / static_cast<double>(pattern.m) : w.settings.sparsity;
    if (p.sparsity == 0) {
      plan.dense_reason = "sparsity 0";
      continue;
    }
    if (p.method != PruningMethod::Magnitude && !plan.layer.linear) {
      p.note = std::string(to_string(p.method)) + " needs a Linear layer's inputs: pruned by magnitude";
      p.method = PruningMethod::Magnitude;
    }
    plan.pruning = p;
  }
}

}  // namespace qforge
