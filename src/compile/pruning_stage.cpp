// The prune stage (pruning_settings): the planned layers' weights set to zero
// before anything is calibrated. Wanda and SparseGPT read each layer's inputs
// (XᵀX, summed exactly over every rank's shard) block by block on the model
// whose earlier blocks are pruned; the solves are dealt across ranks and their
// results broadcast, so every rank holds the same weights and masks. The
// later stages calibrate, quantize and fine-tune the pruned model (the masks
// held); the dense model stays the reference they are measured against.
#include <algorithm>
#include <cmath>
#include <map>

#include "compile/session.h"
#include "prune/prune_allocation.h"
#include "prune/prune_weight.h"
#include "runtime/logger.h"
#include "util/text.h"

namespace qforge {

void CompileSession::plan_pruning_steps() {
  if (!config_.pruning_settings) return;
  std::vector<std::string> measured;
  for (const auto& plan : prepared_.plans)
    if (reads_inputs_to_prune(plan)) measured.push_back(plan.layer.name);
  prepared_.prune_steps =
      plan_solve_steps(measured, prepared_.model->layers(), config_.pruning_settings->blocks, "pruning");
  if (!prepared_.prune_steps.note.empty()) add_note(prepared_.prune_steps.note);
}

// Wanda and SparseGPT need the layer's inputs; so does measuring its error.
bool CompileSession::reads_inputs_to_prune(const LayerPlan& plan) const {
  return plan.pruning && plan.layer.linear &&
         (plan.pruning->method != PruningMethod::Magnitude || config_.pruning_settings->sensitivity_threshold);
}

void CompileSession::prune() {
  PreparedCompile& p = prepared_;
  if (!config_.pruning_settings || config_.disable) return;
  if (config_.pruning_settings->method == PruningMethod::Structured) return;  // done in prepare
  std::vector<std::string> direct;  // pruned from the weight alone
  for (const auto& plan : p.plans) {
    if (plan.pruning && !plan.pruning->note.empty()) add_note("layer '" + plan.layer.name + "': " + plan.pruning->note);
    if (plan.pruning && !reads_inputs_to_prune(plan)) direct.push_back(plan.layer.name);
  }
  if (direct.empty() && p.prune_steps.steps.empty()) {
    add_note("pruning_settings: no layer was pruned (every layer's reason is in the plan)");
    return;
  }
  dense_ = clone_module(p.model->module());
  std::map<std::string, at::Tensor> pruned;
  timer_.run("prune", [&] {  // the same on every rank: the weights alone decide
    for (const auto& name : direct) {
      const LayerPlan& plan = plan_of(name);
      const PrunedWeight w = prune_weight(float_weight(name), {}, *plan.pruning, *config_.pruning_settings, name);
      record_pruned(plan, *plan.pruning, w, {});
      pruned[name] = w.weight;
    }
  });
  if (!p.prune_steps.steps.empty())
    solve_in_steps(
        p.prune_steps.steps, "pruning",
        [&](const std::vector<std::string>& names, const std::vector<at::Tensor>& hessians, const std::string& title) {
          auto solved = prune_and_share(names, hessians, title);
          pruned.insert(solved.begin(), solved.end());
          return solved;
        });
  set_weights(p.model->module(), pruned);
  int64_t zeros = 0, weights = 0;
  for (const auto& [layer, outcome] : pruned_) {
    weights += outcome.mask.numel();
    zeros += outcome.mask.numel() - outcome.mask.sum().item<int64_t>();
  }
  log::info("pruning: " + std::to_string(pruned_.size()) + " layers, " +
            fixed(100.0 * static_cast<double>(zeros) / static_cast<double>(std::max<int64_t>(weights, 1)), 1) +
            "% of their weights set to zero");
}

// One step's layers: their sparsities (the sensitivity threshold's
// allocation), then their solves dealt round-robin to ranks, each pruned
// weight and mask broadcast from the rank that solved it.
std::map<std::string, at::Tensor> CompileSession::prune_and_share(const std::vector<std::string>& names,
                                                                  const std::vector<at::Tensor>& hessians,
                                                                  const std::string& title) {
  const PruningSettings& settings = *config_.pruning_settings;
  std::vector<LayerPruning> chosen;
  for (size_t k = 0; k < names.size(); ++k) {
    LayerPruning planned = *plan_of(names[k]).pruning;
    if (!hessians[k].defined() && planned.method != PruningMethod::Magnitude) {
      add_note("layer '" + names[k] + "': " + to_string(planned.method) +
               ": no calibration input of the layer's width reached it; pruned by magnitude");
      planned.method = PruningMethod::Magnitude;
    }
    chosen.push_back(planned);
  }
  if (settings.sensitivity_threshold) chosen = allocate_sparsity(names, hessians, chosen, title);
  const auto size = static_cast<size_t>(rt_.size());
  std::map<size_t, PrunedWeight> mine;
  std::map<std::string, at::Tensor> out;
  timer_.run(
      title + ": solve",
      [&] {
        for (size_t k = static_cast<size_t>(rt_.rank()); k < names.size(); k += size)
          mine[k] = prune_weight(float_weight(names[k]), hessians[k], chosen[k], settings, names[k]);
      },
      [&] {
        for (size_t k = 0; k < names.size(); ++k) {
          const at::Tensor weight = float_weight(names[k]);
          const auto solved = mine.find(k);
          PrunedWeight w = solved != mine.end() ? solved->second : PrunedWeight{at::empty_like(weight), {}};
          at::Tensor mask = solved != mine.end() ? w.mask.to(weight.scalar_type()) : at::empty_like(weight);
          const CollectiveOptions from_owner{ReduceOp::Sum, static_cast<int>(k % size)};
          prepared_.comm->broadcast(w.weight, from_owner);
          prepared_.comm->broadcast(mask, from_owner);
          w.mask = mask.to(at::kBool);
          record_pruned(plan_of(names[k]), chosen[k], w, hessians[k]);
          out[names[k]] = w.weight;
        }
      });
  return out;
}

// The sparsity of each layer of a step under pruning_settings.sensitivity_threshold
// (prune/prune_allocation.h): every candidate's error measured where the layer is
// solved, shared, and the choice made alike on every rank.
std::vector<LayerPruning> CompileSession::allocate_sparsity(const std::vector<std::string>& names,
                                                            const std::vector<at::Tensor>& hessians,
                                                            const std::vector<LayerPruning>& planned,
                                                            const std::string& title) {
  const PruningSettings& settings = *config_.pruning_settings;
  const auto size = static_cast<size_t>(rt_.size());
  std::vector<std::vector<LayerPruning>> candidates;
  for (const auto& p : planned) candidates.push_back(sparsity_candidates(p));
  std::vector<at::Tensor> errors(names.size());
  timer_.run(
      title + ": sensitivity",
      [&] {
        for (size_t k = static_cast<size_t>(rt_.rank()); k < names.size(); k += size) {
          const at::Tensor weight = float_weight(names[k]);
          std::vector<double> e;
          for (const auto& c : candidates[k])
            e.push_back(hessians[k].defined()
                            ? relative_output_error(
                                  weight, prune_weight(weight, hessians[k], c, settings, names[k]).weight, hessians[k])
                            : 0.0);
          errors[k] = at::tensor(e, at::kDouble).to(prepared_.placement.device);
        }
      },
      [&] {
        for (size_t k = 0; k < names.size(); ++k) {
          if (!errors[k].defined())
            errors[k] = at::empty({static_cast<int64_t>(candidates[k].size())},
                                  at::TensorOptions().dtype(at::kDouble).device(prepared_.placement.device));
          prepared_.comm->broadcast(errors[k], {ReduceOp::Sum, static_cast<int>(k % size)});
        }
      });
  std::vector<SparsityChoice> choices;
  for (size_t k = 0; k < names.size(); ++k) {
    SparsityChoice c{names[k], float_weight(names[k]).numel(), candidates[k], {}};
    const at::Tensor e = errors[k].cpu();
    for (int64_t i = 0; i < e.numel(); ++i) c.errors.push_back(e[i].item<double>());
    choices.push_back(c);
  }
  const SparsityAllocation allocation = allocate_within_threshold(choices, *settings.sensitivity_threshold);
  for (const auto& line : allocation.notes) add_note(line);
  return allocation.chosen;
}

void CompileSession::record_pruned(const LayerPlan& plan, const LayerPruning& chosen, const PrunedWeight& w,
                                   const at::Tensor& hessian) {
  LayerResult::Pruned r;
  r.method = to_string(chosen.method);
  r.pattern = chosen.pattern();
  r.planned = plan.pruning->sparsity;
  r.mask = w.mask.cpu();  // one byte a weight, kept off the GPU until a stage holds it
  r.sparsity = 1.0 - static_cast<double>(w.mask.sum().item<int64_t>()) / static_cast<double>(w.mask.numel());
  if (hessian.defined()) r.output_error = relative_output_error(float_weight(plan.layer.name), w.weight, hessian);
  pruned_[plan.layer.name] = r;
}

}  // namespace qforge
