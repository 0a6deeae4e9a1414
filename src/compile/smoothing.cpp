// AWQ and SmoothQuant in the compile. `prepare` plans which layers read one
// input and where the division by s folds (so the dry run shows it and a
// bad blocks setting fails before any work); `smooth` measures the inputs on
// the calibration data, chooses the scales, and replaces the model with the
// scaled one, which computes the same. Everything after it (activation
// calibration, GPTQ, fine-tuning, export) sees the scaled model.
#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <set>

#include "compile/input_statistics.h"
#include "compile/session.h"
#include "quant/awq.h"
#include "quant/gptq.h"
#include "runtime/logger.h"
#include "util/text.h"

namespace qforge {

void CompileSession::plan_input_scales() {
  PreparedCompile& p = prepared_;
  if (!p.quantizing) return;
  const auto& smoothing = config_.quantization_settings->activations.smoothing;
  std::set<std::string> awq;
  std::vector<std::string> wanted;
  for (const auto& plan : p.plans) {
    if (!plan.quantize) continue;
    if (plan.weights.enabled && plan.weights.algorithm == WeightAlgorithm::Awq) {
      awq.insert(plan.layer.name);
      wanted.push_back(plan.layer.name);
    } else if (smoothing && plan.activations.enabled && gptq_applies(plan.layer)) {
      wanted.push_back(plan.layer.name);
    }
  }
  if (wanted.empty()) {
    if (smoothing) add_note("activations.smoothing: no Linear layer quantizes its input; nothing is smoothed");
    return;
  }
  InputGroups found = input_groups(p.model->module(), config_.model.method, wanted);
  std::vector<std::string> refused;
  for (const auto& [layer, why] : found.refused) {
    refused.push_back(layer + " (" + why + ")");
    for (auto& plan : p.plans)
      if (plan.layer.name == layer && awq.count(layer)) plan.weights.algorithm = WeightAlgorithm::Rtn;
  }
  if (!refused.empty())
    add_note("input scales (awq, smoothing) cannot apply to " + join(refused) +
             "; awq layers among them are rounded to nearest");
  std::vector<std::string> explicit_groups;
  std::set<std::string> searched_layers;
  for (auto& group : found.groups) {
    const bool searched =
        std::any_of(group.layers.begin(), group.layers.end(), [&](const std::string& l) { return awq.count(l) > 0; });
    for (auto& plan : p.plans)
      if (std::find(group.layers.begin(), group.layers.end(), plan.layer.name) != group.layers.end())
        plan.smoothed = !searched && plan.quantize && plan.activations.enabled;
    if (searched) searched_layers.insert(group.layers.begin(), group.layers.end());
    if (group.divided_params.empty()) explicit_groups.push_back(join(group.layers));
    p.scale_groups.push_back(group);
    p.group_awq.push_back(searched);
  }
  std::vector<std::string> awq_layers;  // in definition order, as the steps are planned
  for (const auto& l : p.model->layers())
    if (searched_layers.count(l.name)) awq_layers.push_back(l.name);
  if (!explicit_groups.empty())
    add_note("input scales: the inputs of " + join(explicit_groups, "; ") +
             " are divided explicitly in the graph (the input has another reader, or no norm or linear layer "
             "computes it to fold the division into)");
  if (!awq_layers.empty())
    p.awq_steps =
        plan_solve_steps(awq_layers, p.model->layers(), config_.quantization_settings->weights.awq.blocks, "awq");
  if (!p.awq_steps.note.empty()) add_note(p.awq_steps.note);
}

void CompileSession::smooth() {
  PreparedCompile& p = prepared_;
  if (p.scale_groups.empty()) return;
  const auto& groups = p.scale_groups;
  std::vector<at::Tensor> scales(groups.size());
  std::vector<double> alphas(groups.size(), 0.0);
  std::vector<size_t> smoothquant;
  for (size_t k = 0; k < groups.size(); ++k)
    if (!p.group_awq[k]) smoothquant.push_back(k);
  if (!smoothquant.empty()) {
    const auto s = smoothquant_group_scales(smoothquant);
    for (size_t i = 0; i < smoothquant.size(); ++i) {
      scales[smoothquant[i]] = s[i];
      alphas[smoothquant[i]] = config_.quantization_settings->activations.smoothing->alpha;
    }
  }
  for (size_t s = 0; s < p.awq_steps.steps.size(); ++s) {
    const auto& step = p.awq_steps.steps[s];
    std::vector<size_t> in_step;
    for (size_t k = 0; k < groups.size(); ++k)
      if (p.group_awq[k] &&
          std::find(step.layers.begin(), step.layers.end(), groups[k].layers.front()) != step.layers.end())
        in_step.push_back(k);
    if (in_step.empty()) continue;
    const std::string title = !step.block.empty()             ? "awq " + step.block
                              : p.awq_steps.steps.size() == 1 ? std::string("awq")
                                                              : std::string("awq, layers outside blocks");
    std::vector<double> chosen;
    const auto found = awq_group_scales(in_step, title, chosen);
    for (size_t i = 0; i < in_step.size(); ++i) {
      scales[in_step[i]] = found[i];
      alphas[in_step[i]] = chosen[i];
    }
  }
  for (size_t k = 0; k < groups.size(); ++k)  // a group whose first layer no step holds keeps its input
    if (!scales[k].defined()) scales[k] = at::ones({groups[k].channels}, at::kDouble);
  timer_.run("smooth: apply",
             [&] { p.model->module() = with_input_scales(p.model->module(), config_.model.method, groups, scales); });
  base_ = p.model->module();
  for (size_t k = 0; k < groups.size(); ++k)
    for (const auto& layer : groups[k].layers) {
      LayerResult::InputScaling record;
      record.method = p.group_awq[k] ? "awq" : "smoothquant";
      record.alpha = alphas[k];
      record.divided_in = groups[k].divided_in;
      for (const auto& other : groups[k].layers)
        if (other != layer) record.shared_with.push_back(other);
      record.max_scale = scales[k].max().item<double>();
      record.min_scale = scales[k].min().item<double>();
      input_scaling_[layer] = record;
    }
  log::info("input scales: " + std::to_string(groups.size()) + " group(s) of layers reading one input, " +
            std::to_string(std::count(p.group_awq.begin(), p.group_awq.end(), true)) + " searched by awq");
}

namespace {

std::vector<ObservedInput> first_readers(const std::vector<InputGroup>& groups, const std::vector<size_t>& which) {
  std::vector<ObservedInput> out;
  for (size_t k : which) out.push_back({groups[k].layers.front(), groups[k].channels});
  return out;
}

}  // namespace

std::vector<at::Tensor> CompileSession::smoothquant_group_scales(const std::vector<size_t>& which) {
  const PreparedCompile& p = prepared_;
  const ForwardFn run = [this](torch::jit::Module& m, const Batch& b) { return run_mixed(m, b); };
  const auto stats = channel_statistics(p.model->module(), config_.model.method, first_readers(p.scale_groups, which),
                                        run, calibration_source(), *p.comm, timer_, "smoothquant: ranges");
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < which.size(); ++i) {
    std::vector<at::Tensor> weights;
    for (const auto& layer : p.scale_groups[which[i]].layers) weights.push_back(float_weight(layer));
    out.push_back(
        smoothquant_scales(stats[i].max_abs, weights, config_.quantization_settings->activations.smoothing->alpha));
  }
  return out;
}

// AWQ for some groups: their inputs' mean |x|, then each candidate exponent's
// output error of the quantized weights, summed exactly over all ranks' rows.
std::vector<at::Tensor> CompileSession::awq_group_scales(const std::vector<size_t>& which, const std::string& phase,
                                                         std::vector<double>& alphas) {
  const PreparedCompile& p = prepared_;
  const ForwardFn run = [this](torch::jit::Module& m, const Batch& b) { return run_mixed(m, b); };
  const auto inputs = first_readers(p.scale_groups, which);
  const auto stats = channel_statistics(p.model->module(), config_.model.method, inputs, run, calibration_source(),
                                        *p.comm, timer_, phase + ": input means");
  std::map<std::string, const LayerPlan*> plan_of;
  for (const auto& plan : p.plans) plan_of[plan.layer.name] = &plan;
  const int64_t grid = config_.quantization_settings->weights.awq.grid;
  std::vector<std::vector<at::Tensor>> candidates(which.size());
  timer_.run(phase + ": candidates", [&] {
    for (size_t i = 0; i < which.size(); ++i) {
      std::vector<at::Tensor> weights;
      std::vector<WeightQuantSettings> settings;
      for (const auto& layer : p.scale_groups[which[i]].layers) {
        const auto plan = plan_of.find(layer);
        if (plan == plan_of.end() || !plan->second->quantize || !plan->second->weights.enabled)
          continue;  // a float reader's outputs do not change
        weights.push_back(float_weight(layer));
        settings.push_back(plan->second->weights);
      }
      if (weights.empty() || stats[i].rows == 0) continue;
      for (int64_t a = 0; a < grid; ++a)
        candidates[i].push_back(
            awq_weight_error(weights, settings, awq_scales(stats[i].mean_abs, static_cast<double>(a) / grid))
                .to(at::kDouble));
    }
  });
  const auto errors = candidate_errors(p.model->module(), config_.model.method, inputs, candidates, run,
                                       calibration_source(), *p.comm, timer_, phase + ": search");
  std::vector<at::Tensor> out;
  alphas.clear();
  for (size_t i = 0; i < which.size(); ++i) {
    if (candidates[i].empty()) {  // nothing seen or nothing quantized: no scaling
      out.push_back(at::ones({inputs[i].channels}, at::kDouble));
      alphas.push_back(0.0);
      continue;
    }
    const int64_t best = errors[i].argmin().item<int64_t>();  // the first of equal errors: the smallest exponent
    alphas.push_back(static_cast<double>(best) / static_cast<double>(grid));
    out.push_back(awq_scales(stats[i].mean_abs, alphas.back()));
  }
  return out;
}

}  // namespace qforge
