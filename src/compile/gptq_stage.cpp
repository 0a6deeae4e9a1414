// GPTQ's part of the quantize stage: the block-by-block pass
// (compile/hessian_steps.cpp) gives each step's layers their XᵀX, and their
// solves are dealt across ranks. A pruned layer's mask is held in the solve.
#include <algorithm>
#include <map>

#include "compile/session.h"
#include "quant/gptq.h"
#include "runtime/logger.h"
#include "util/text.h"

namespace qforge {

void CompileSession::solve_gptq_layers() {
  const PreparedCompile& p = prepared_;
  std::map<std::string, size_t> index;  // layer -> its position in result_.layers
  for (size_t i = 0; i < result_.layers.size(); ++i) {
    const LayerResult& l = result_.layers[i];
    if (l.quantized && l.weight && l.plan.weights.algorithm == WeightAlgorithm::Gptq) index[l.plan.layer.name] = i;
  }
  if (index.empty()) return;
  // The planned steps, less the layers that stayed float since (not reached, too sensitive).
  std::vector<SolveSteps::Step> steps;
  for (const auto& planned : p.gptq_steps.steps) {
    SolveSteps::Step step{planned.block, {}};
    for (const auto& name : planned.layers)
      if (index.count(name)) step.layers.push_back(name);
    if (!step.layers.empty()) steps.push_back(step);
  }
  log::info("gptq: " + std::to_string(index.size()) + " layers in " + std::to_string(steps.size()) +
            " step(s), solves dealt to " + std::to_string(rt_.size()) + " rank(s)");
  std::vector<std::string> unreached;
  solve_in_steps(
      steps, "gptq",
      [&](const std::vector<std::string>& names, const std::vector<at::Tensor>& hessians, const std::string& title) {
        std::vector<size_t> layers;
        std::vector<at::Tensor> reached;
        for (size_t k = 0; k < names.size(); ++k) {
          if (!hessians[k].defined()) {
            unreached.push_back(names[k]);
            continue;
          }
          layers.push_back(index.at(names[k]));
          reached.push_back(hessians[k]);
        }
        solve_and_share(layers, reached, title + ": solve");
        std::map<std::string, at::Tensor> solved;
        for (size_t i : layers) solved[result_.layers[i].plan.layer.name] = result_.layers[i].solved_weight;
        return solved;
      });
  if (unreached.empty()) return;
  add_note("weights.algorithm gptq: no calibration input of the layer's width reached " + join(unreached) +
           "; rounded to nearest");
  for (auto& l : result_.layers)  // what the report calls their algorithm
    if (std::find(unreached.begin(), unreached.end(), l.plan.layer.name) != unreached.end())
      l.plan.weights.algorithm = WeightAlgorithm::Rtn;
}

// Layers dealt round-robin to ranks; each rank solves its share, and every
// solved weight and its parameters are broadcast from the rank that solved it.
void CompileSession::solve_and_share(const std::vector<size_t>& layers, const std::vector<at::Tensor>& hessians,
                                     const std::string& phase) {
  const PreparedCompile& p = prepared_;
  if (layers.empty()) return;
  std::map<size_t, GptqResult> mine;  // the layers this rank solves, by position in `layers`
  timer_.run(
      phase,
      [&] {
        for (size_t k = static_cast<size_t>(rt_.rank()); k < layers.size(); k += static_cast<size_t>(rt_.size())) {
          const LayerResult& l = result_.layers[layers[k]];
          SolveSparsity sparsity;  // a pruned layer's zeros stay zero
          if (l.pruned) sparsity.held = l.pruned->mask;
          mine[k] =
              gptq_quantize(float_weight(l.plan.layer.name), hessians[k], l.plan.weights, l.plan.layer.name, sparsity);
        }
      },
      [&] {
        for (size_t k = 0; k < layers.size(); ++k) {
          LayerResult& l = result_.layers[layers[k]];
          const at::Tensor weight = float_weight(l.plan.layer.name);
          const auto solved = mine.find(k);
          GptqResult r = solved != mine.end() ? solved->second : GptqResult{at::empty_like(weight), *l.weight};
          const CollectiveOptions from_owner{ReduceOp::Sum, static_cast<int>(k % static_cast<size_t>(rt_.size()))};
          p.comm->broadcast(r.weight, from_owner);
          p.comm->broadcast(r.quant.qparams.scale, from_owner);
          p.comm->broadcast(r.quant.qparams.zero_point, from_owner);
          l.weight = r.quant;
          l.solved_weight = r.weight;
          l.weight_sqnr_db = sqnr_db(weight, r.weight);
        }
      });
}

}  // namespace qforge
