// Global settings + per-layer overrides -> the decision for each layer.
#include <fnmatch.h>

#include <algorithm>

#include "plan/layer_selection.h"
#include "prune/prune_plan.h"
#include "qforge/config_yaml.h"
#include "qforge/deployment.h"
#include "qforge/errors.h"

namespace qforge {
namespace {

void apply(TensorQuantSettings& s, const TensorQuantOverride& o) {
  if (o.enabled) s.enabled = *o.enabled;
  if (o.bits) s.bits = *o.bits;
  if (o.granularity) s.granularity = *o.granularity;
  if (o.group_size) s.group_size = *o.group_size;
  if (o.symmetric) s.symmetric = *o.symmetric;
  if (o.is_signed) s.is_signed = *o.is_signed;
  if (o.observer) s.observer = *o.observer;
  if (o.percentile) s.percentile = *o.percentile;
}

void apply(WeightQuantSettings& s, const WeightQuantOverride& o) {
  apply(static_cast<TensorQuantSettings&>(s), o);
  if (o.algorithm) s.algorithm = *o.algorithm;
}

bool is_glob(const std::string& pattern) { return pattern.find_first_of("*?[") != std::string::npos; }

}  // namespace

bool layer_matches(const std::string& pattern, const std::string& name) {
  for (std::string candidate = name;;) {
    if (fnmatch(pattern.c_str(), candidate.c_str(), 0) == 0) return true;
    const auto dot = candidate.rfind('.');
    if (dot == std::string::npos) return false;
    candidate.resize(dot);
  }
}

std::vector<LayerPlan> plan_layers(const std::vector<LayerInfo>& layers, const ExperimentConfig& config) {
  // Least specific first, so that more specific keys override field by field.
  std::vector<std::string> keys;
  for (const auto& [pattern, settings] : config.layer_quantization_settings) keys.push_back(pattern);
  std::stable_sort(keys.begin(), keys.end(), [](const std::string& a, const std::string& b) {
    if (is_glob(a) != is_glob(b)) return is_glob(a);
    return a.size() < b.size();
  });

  std::vector<std::string> names;
  for (const auto& layer : layers) names.push_back(layer.name);
  for (const auto& key : keys) {
    const bool any =
        std::any_of(names.begin(), names.end(), [&](const std::string& n) { return layer_matches(key, n); });
    if (!any) {
      std::string near;
      for (const auto& n : nearest_names(key, names, 5)) near += (near.empty() ? "" : ", ") + n;
      throw ConfigError("layer_quantization_settings[" + key +
                        "] matches no layer of the model; closest layer names: " + near +
                        " (qforge inspect MODEL lists them all)");
    }
  }

  std::vector<LayerPlan> plans;
  for (const auto& layer : layers) {
    if (!layer.quantizable) continue;
    LayerPlan plan;
    plan.layer = layer;
    if (config.quantization_settings) {
      plan.weights = config.quantization_settings->weights;
      plan.activations = config.quantization_settings->activations;
    }
    bool skip = false;
    for (const auto& key : keys) {
      if (!layer_matches(key, layer.name)) continue;
      const auto& override_settings = config.layer_quantization_settings.at(key);
      plan.matched.push_back(key);
      skip = override_settings.skip;  // the most specific key decides
      apply(plan.weights, override_settings.weights);
      apply(plan.activations, override_settings.activations);
    }
    // Embeddings read indices, not activations: only their table is quantized.
    if (layer.type == "Embedding" || layer.type == "EmbeddingBag") plan.activations.enabled = false;
    if (!config.quantization_settings)
      plan.reason = "no quantization_settings";
    else if (skip)
      plan.reason = "skipped by layer_quantization_settings[" + plan.matched.back() + "]";
    else if (!plan.weights.enabled && !plan.activations.enabled)
      plan.reason = "weights and activations disabled";
    plan.kept_by_choice = !plan.reason.empty();
    if (plan.reason.empty() && plan.weights.enabled && plan.weights.granularity == Granularity::Group &&
        layer.weight_shape.size() >= 2) {
      int64_t inputs = 1;  // elements one output channel reads: in_features, or in_channels*kernel
      for (size_t d = 1; d < layer.weight_shape.size(); ++d) inputs *= layer.weight_shape[d];
      if (inputs % plan.weights.group_size != 0)
        plan.reason = std::to_string(inputs) + " inputs per output channel are not a multiple of group_size " +
                      std::to_string(plan.weights.group_size);
    }
    plan.quantize = plan.reason.empty();
    if (plan.quantize && config.deployment_settings)
      check_against_target(
          config.deployment_settings->target, plan.weights, plan.activations,
          plan.matched.empty() ? "quantization_settings" : "layer_quantization_settings[" + plan.matched.back() + "]");
    plans.push_back(std::move(plan));
  }
  plan_pruning(plans, layers, config);
  return plans;
}

}  // namespace qforge
