// Structured pruning (pruning_settings.method: structured), the last step of
// prepare: the model's channel groups found on its graph (prune/channel_groups.h),
// each group's least important channels removed from every layer that writes
// or reads them, before any layer is planned, so every later stage works on a
// smaller dense model. The scores come from the weights, or from input
// statistics summed exactly over every rank's shard: every rank removes the
// same channels. The model as loaded stays the teacher and the reference.
#include <algorithm>

#include "compile/input_statistics.h"
#include "compile/session.h"
#include "compile/taylor_importance.h"
#include "graph/fold_attributes.h"
#include "graph/rewrite.h"
#include "metrics/predictions.h"
#include "plan/layer_selection.h"
#include "prune/channel_importance.h"
#include "prune/channel_removal.h"
#include "prune/prune_plan.h"
#include "qforge/errors.h"
#include "runtime/logger.h"
#include "util/text.h"

namespace qforge {
namespace {

// Every convolution and Linear layer the analysis may meet, with why its channels must stay.
std::map<std::string, LayerFacts> layer_facts(const std::vector<LayerPlan>& plans, const std::vector<LayerInfo>& layers,
                                              const Rewrite& rewrite, const ExperimentConfig& config,
                                              std::map<std::string, ChannelPlan>& wanted) {
  std::map<std::string, LayerFacts> facts;
  for (const auto& plan : plans) {
    if (plan.layer.weight_shape.size() < 2) continue;
    ChannelPlan c = plan_channel_pruning(plan, layers, config);
    const auto reads = rewrite.weight_reads.find(plan.layer.name);
    if (reads != rewrite.weight_reads.end() && reads->second.size() > 1 && c.keep_whole.empty())
      c = {0, "the method reads its weight " + std::to_string(reads->second.size()) + " times", c.named_by};
    facts[plan.layer.name] = {plan.layer.weight_shape, c.keep_whole};
    wanted[plan.layer.name] = c;
  }
  return facts;
}

// The report's view of a group; the sparsity asked is the least any of its layers asks.
ChannelGroup describe_group(const ChannelDependencyGroup& g, const std::map<std::string, ChannelPlan>& wanted) {
  ChannelGroup out;
  out.channels = out.kept = g.channels;
  out.reason = g.reason;
  out.sparsity = 1.0;
  for (const auto& use : g.uses) {
    auto& names = use.role == ChannelUse::Role::Writer ? out.producers : out.readers;
    if (std::find(names.begin(), names.end(), use.layer) == names.end()) names.push_back(use.layer);
    const auto w = wanted.find(use.layer);  // a batch norm follows the layers around it
    if (use.role != ChannelUse::Role::Norm)
      out.sparsity = std::min(out.sparsity, w == wanted.end() ? 0.0 : w->second.sparsity);
  }
  if (out.reason.empty() && out.sparsity == 0) out.reason = "a layer of it asks for sparsity 0 or stays whole";
  return out;
}

// A layer an override names on purpose whose channels the graph keeps: refused, with the reason.
void refuse_named_layers(const ChannelDependencyGroup& g, const std::map<std::string, ChannelPlan>& wanted) {
  for (const auto& use : g.uses) {
    const auto w = wanted.find(use.layer);
    if (w != wanted.end() && !w->second.named_by.empty())
      throw ConfigError("layer_quantization_settings[" + w->second.named_by + "].pruning: layer '" + use.layer +
                        "' cannot lose channels: " + g.reason + "; set enabled: false there");
  }
}

// Every layer reading a prunable group, with its input as the layer sees it.
std::vector<ObservedInput> reader_inputs(const std::vector<ChannelDependencyGroup>& groups, const Model& model) {
  std::map<std::string, ObservedInput> inputs;
  for (const auto& g : groups) {
    if (!g.reason.empty()) continue;
    for (const auto& use : g.uses) {
      if (use.role != ChannelUse::Role::Reader) continue;
      const auto shape = model.submodule(use.layer).attr("weight").toTensor().sizes();
      const bool linear = use.node->kind().toQualString() == std::string("aten::linear");
      inputs[use.layer] = {use.layer, shape[1], !linear};
    }
  }
  std::vector<ObservedInput> list;
  for (const auto& [layer, in] : inputs) list.push_back(in);
  return list;
}

// importance taylor's loss of a batch: the cross-entropy of the data's labels
// where they fit the model's predictions, else of the model's own top
// predictions (their gradient is what keeping those predictions depends on).
at::Tensor taylor_loss(const c10::IValue& output, const Batch& batch) {
  const auto logits = prediction_logits(output, batch.rows());
  if (!logits)
    throw ConfigError(
        "pruning_settings.importance: taylor differentiates the cross-entropy of the model's predictions, and "
        "its output is not [batch, classes] or [batch, positions, classes] logits (use importance: activation)");
  const auto labels = class_labels(batch.labels, output.toTensor());
  const at::Tensor target = labels ? *labels : logits->detach().argmax(-1);
  return at::cross_entropy_loss(logits->to(at::kFloat), target, {}, at::Reduction::Sum);
}

}  // namespace

void CompileSession::prune_channels() {
  PreparedCompile& p = prepared_;
  const PruningSettings& settings = *config_.pruning_settings;
  const std::string& method = config_.model.method;
  std::optional<Rewrite> rewrite;
  ChannelGraph graph;
  std::map<std::string, ChannelPlan> wanted;
  timer_.run("prune channels: groups", [&] {
    const auto layers = p.model->layers();
    rewrite.emplace(p.model->module(), method);
    fold_plain_attributes(rewrite->graph, rewrite->module);
    rewrite->weight_reads = weight_reads_of(*rewrite->graph);
    graph = find_channel_groups(*rewrite->graph,
                                layer_facts(plan_layers(layers, config_), layers, *rewrite, config_, wanted));
    for (const auto& g : graph.groups)
      if (!g.reason.empty()) refuse_named_layers(g, wanted);
  });
  std::map<std::string, at::Tensor> means;  // activation
  std::vector<at::Tensor> taylor;           // taylor: per group
  if (settings.importance == ChannelImportance::Activation) means = reader_input_means(graph.groups);
  if (settings.importance == ChannelImportance::Taylor) taylor = reader_taylor_scores(graph.groups);
  StructuredPruning record;
  record.importance = to_string(settings.importance);
  record.dense_parameters = p.model->parameter_count();
  const WeightOf weight = [&](const std::string& layer) {
    return submodule(rewrite->module, layer, p.model->path()).attr("weight").toTensor();
  };
  std::vector<ChannelGroup> described;
  std::vector<at::Tensor> scores(graph.groups.size());  // the prunable groups'
  timer_.run("prune channels: scores", [&] {
    for (size_t i = 0; i < graph.groups.size(); ++i) {
      described.push_back(describe_group(graph.groups[i], wanted));
      if (!described[i].reason.empty()) continue;
      scores[i] = taylor.empty() ? channel_scores(graph.groups[i], weight, settings.importance, means) : taylor[i];
    }
  });
  if (settings.sensitivity_threshold)
    allocate_channel_sparsity(graph.groups, described, scores, rewrite->module, weight);
  timer_.run("prune channels", [&] {
    std::vector<at::Tensor> kept(graph.groups.size());
    for (size_t i = 0; i < graph.groups.size(); ++i) {
      ChannelGroup g = described[i];
      if (g.reason.empty()) {
        const int64_t keep = channels_to_keep(g.channels, g.sparsity);
        if (keep < g.channels) {
          kept[i] = highest_channels(scores[i], keep);
          g.kept_channels = std::vector<int64_t>(kept[i].data_ptr<int64_t>(), kept[i].data_ptr<int64_t>() + keep);
        }
        g.kept = keep;
      }
      record.groups.push_back(g);
    }
    remove_channels(rewrite->module, *rewrite->graph, graph, kept);
    dense_ = p.model->module();
    p.model = Model::wrap(rewrite->module, p.model->path(), method);
  });
  record.parameters = p.model->parameter_count();
  int64_t pruned = 0;
  for (const auto& g : record.groups) pruned += g.kept < g.channels ? 1 : 0;
  log::info("structured pruning (" + record.importance + "): " + std::to_string(pruned) + " of " +
            std::to_string(record.groups.size()) + " channel groups pruned; parameters " +
            std::to_string(record.dense_parameters) + " -> " + std::to_string(record.parameters));
  if (pruned == 0) add_note("pruning_settings: no channel group could be pruned (each group's reason is in the report)");
  result_.structured = std::move(record);
}

// Collective: the mean |x| of each input channel of every layer reading a
// prunable group, over every rank's shard, exactly.
std::map<std::string, at::Tensor> CompileSession::reader_input_means(
    const std::vector<ChannelDependencyGroup>& groups) {
  const auto list = reader_inputs(groups, *prepared_.model);
  const ForwardFn run = [this](torch::jit::Module& m, const Batch& b) { return run_mixed(m, b); };
  const auto stats = channel_statistics(prepared_.model->module(), config_.model.method, list, run,
                                        calibration_source(), *prepared_.comm, timer_, "prune channels: activations");
  std::map<std::string, at::Tensor> out;
  for (size_t i = 0; i < list.size(); ++i) out[list[i].layer] = stats[i].mean_abs;
  return out;
}

// Collective: each prunable group's first-order Taylor scores (compile/taylor_importance.h)
// over every rank's shard, exactly; undefined for the groups kept whole.
std::vector<at::Tensor> CompileSession::reader_taylor_scores(const std::vector<ChannelDependencyGroup>& groups) {
  const auto inputs = reader_inputs(groups, *prepared_.model);
  std::map<std::string, size_t> input_of;
  for (size_t i = 0; i < inputs.size(); ++i) input_of[inputs[i].layer] = i;
  std::vector<SpannedChannels> targets;
  std::vector<size_t> group_of;
  for (size_t g = 0; g < groups.size(); ++g) {
    if (!groups[g].reason.empty()) continue;
    SpannedChannels t{groups[g].channels, {}};
    for (const auto& use : groups[g].uses)
      if (use.role == ChannelUse::Role::Reader) t.spans.push_back({input_of.at(use.layer), use.offset, use.per_channel});
    targets.push_back(t);
    group_of.push_back(g);
  }
  std::vector<at::Tensor> out(groups.size());
  if (targets.empty()) return out;
  const ForwardFn run = [this](torch::jit::Module& m, const Batch& b) { return run_mixed(m, b); };
  const auto scores = taylor_scores(prepared_.model->module(), config_.model.method, inputs, targets, run, taylor_loss,
                                    calibration_source(), *prepared_.comm, timer_, "prune channels: taylor");
  for (size_t k = 0; k < scores.size(); ++k) out[group_of[k]] = scores[k];
  return out;
}

}  // namespace qforge
