// GPTQ's part of the quantize stage, step by step (plan/solve_steps.h): each
// step's layers get their XᵀX on the model whose earlier steps are solved,
// then are solved, dealt across ranks. Where the method can be cut at the
// blocks (graph/block_segments.h), each rank keeps its shard's block inputs
// (compile/block_inputs.h) and runs one block per pass; otherwise every step
// runs the model from its inputs.
#include <algorithm>
#include <map>
#include <optional>

#include "compile/block_inputs.h"
#include "compile/session.h"
#include "graph/block_segments.h"
#include "quant/gptq.h"
#include "runtime/device.h"
#include "runtime/logger.h"
#include "util/text.h"

namespace qforge {
namespace {

std::string step_title(const SolveSteps::Step& step, size_t steps) {
  return !step.block.empty() ? "gptq " + step.block
         : steps == 1        ? std::string("gptq")
                             : std::string("gptq, layers outside blocks");
}

// The segment each step runs in, or why the steps do not follow the segments.
std::optional<std::vector<size_t>> step_segments(const std::vector<SolveSteps::Step>& steps,
                                                 const BlockSegments& segments, std::string& why) {
  std::vector<size_t> out;
  for (const auto& step : steps) {
    std::optional<size_t> segment;
    for (const auto& layer : step.layers) {
      const auto found = segments.segment_of_layer.find(layer);
      if (found == segments.segment_of_layer.end()) {
        why = "layer '" + layer + "' is not read in one place between two blocks";
        return std::nullopt;
      }
      if (segment && *segment != found->second) {
        why = "layers '" + step.layers.front() + "' and '" + layer +
              "', solved together, are read on both sides of a block";
        return std::nullopt;
      }
      segment = found->second;
    }
    if (!out.empty() && *segment < out.back()) {
      why = "layer '" + step.layers.front() + "' is read before the block ahead of it in the module tree";
      return std::nullopt;
    }
    out.push_back(*segment);
  }
  return out;
}

}  // namespace

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
  if (!solve_gptq_on_kept_inputs(steps, index, unreached)) solve_gptq_from_model_inputs(steps, index, unreached);
  if (unreached.empty()) return;
  add_note("weights.algorithm gptq: no calibration input of the layer's width reached " + join(unreached) +
           "; rounded to nearest");
  for (auto& l : result_.layers)  // what the report calls their algorithm
    if (std::find(unreached.begin(), unreached.end(), l.plan.layer.name) != unreached.end())
      l.plan.weights.algorithm = WeightAlgorithm::Rtn;
}

// Each block runs on its kept inputs: one block's work per pass instead of the whole model's.
bool CompileSession::solve_gptq_on_kept_inputs(const std::vector<SolveSteps::Step>& steps,
                                               const std::map<std::string, size_t>& index,
                                               std::vector<std::string>& unreached) {
  const PreparedCompile& p = prepared_;
  std::vector<std::string> blocks;
  for (const auto& step : steps)
    if (!step.block.empty()) blocks.push_back(step.block);
  if (blocks.empty()) return false;  // one step: nothing to keep between steps
  std::string why;
  if (callbacks_.forward) why = "the forward callback runs the whole model";
  std::optional<BlockSegments> segments;
  std::optional<std::vector<size_t>> segment_of_step;
  if (why.empty()) {
    auto split = split_at_blocks(p.model->module(), config_.model.method, blocks);
    if (auto* reason = std::get_if<std::string>(&split))
      why = *reason;
    else
      segments = std::move(std::get<BlockSegments>(split));
  }
  if (segments) segment_of_step = step_segments(steps, *segments, why);
  if (!segment_of_step) {
    add_note("weights.gptq: " + why + "; every block's inputs are computed from the model's inputs again");
    return false;
  }
  const c10::Device device = p.placement.device;
  const auto run_first = [this, device](torch::jit::Module& m, const std::string& method, const Batch& batch) {
    AutocastScope autocast(config_.autocast, device);
    return run_module(m, method, prepared_.binding, to_device(batch, device), prepared_.model->path());
  };
  BlockInputs inputs(calibration_source(), run_first, device, config_.autocast,
                     config_.quantization_settings->weights.gptq.offload);
  for (size_t s = 0; s < steps.size(); ++s) {
    const std::string title = step_title(steps[s], steps.size());
    const size_t segment = (*segment_of_step)[s];
    while (inputs.segment() < segment) {
      const std::string method = segments->methods[inputs.segment()];
      timer_.run(title + ": inputs", [&] { inputs.advance(segments->module, method); });
      log::info(title + ": block inputs kept, " + inputs.where());
    }
    const std::string method = segments->methods[segment];
    const Sweep sweep = [&](torch::jit::Module& observed) { inputs.sweep(observed, method); };
    set_solved_weights(segments->module,
                       solve_gptq_step(steps[s], title, segments->module, method, sweep, index, unreached));
  }
  return true;
}

// Each step runs the model from its inputs, the earlier steps solved.
void CompileSession::solve_gptq_from_model_inputs(const std::vector<SolveSteps::Step>& steps,
                                                  const std::map<std::string, size_t>& index,
                                                  std::vector<std::string>& unreached) {
  const PreparedCompile& p = prepared_;
  const ShardSource shard = calibration_source();
  torch::jit::Module model = steps.size() > 1 ? clone_module(p.model->module()) : p.model->module();
  const Sweep sweep = [&](torch::jit::Module& observed) {
    for_each_batch(shard, [&](const Batch& batch) { run_mixed(observed, batch); });
  };
  for (size_t s = 0; s < steps.size(); ++s) {
    const auto solved = solve_gptq_step(steps[s], step_title(steps[s], steps.size()), model, config_.model.method,
                                        sweep, index, unreached);
    if (s + 1 < steps.size()) set_solved_weights(model, solved);  // `model` is a clone then
  }
}

// One step: its layers' XᵀX over `sweep` of `method` of `model`, and their
// solves. Returns the layers solved.
std::vector<size_t> CompileSession::solve_gptq_step(const SolveSteps::Step& step, const std::string& title,
                                                    torch::jit::Module& model, const std::string& method,
                                                    const Sweep& sweep, const std::map<std::string, size_t>& index,
                                                    std::vector<std::string>& unreached) {
  const PreparedCompile& p = prepared_;
  std::vector<CalibrationPoint> points;
  for (const auto& name : step.layers) points.push_back({name, TensorQuantSettings{}, false, true});
  const CalibrationStatistics stats =
      qforge::calibrate(model, method, points, sweep, p.placement.device, *p.comm, timer_, title);
  std::vector<size_t> layers;
  std::vector<at::Tensor> hessians;
  for (size_t k = 0; k < points.size(); ++k) {
    const size_t i = index.at(step.layers[k]);
    const at::Tensor& h = stats.hessians[k];
    if (h.defined() && h.size(0) == result_.layers[i].plan.layer.weight_shape[1]) {
      layers.push_back(i);
      hessians.push_back(h);
    } else {
      unreached.push_back(step.layers[k]);
    }
  }
  solve_and_share(layers, hessians, title + ": solve");
  return layers;
}

void CompileSession::set_solved_weights(torch::jit::Module& model, const std::vector<size_t>& layers) const {
  for (size_t i : layers)
    submodule(model, result_.layers[i].plan.layer.name, prepared_.model->path())
        .setattr("weight", result_.layers[i].solved_weight);
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
          mine[k] = gptq_quantize(float_weight(l.plan.layer.name), hessians[k], l.plan.weights, l.plan.layer.name);
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
