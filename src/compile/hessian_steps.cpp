// The block-by-block pass GPTQ and pruning share (plan/solve_steps.h): each
// step's layers get their XᵀX on the model whose earlier steps are solved,
// then the algorithm solves them. Where the method can be cut at the blocks
// (graph/block_segments.h), each rank keeps its shard's block inputs
// (compile/block_inputs.h) and runs one block per pass; otherwise every step
// runs the model from its inputs.
#include <algorithm>
#include <map>
#include <optional>

#include "compile/block_inputs.h"
#include "compile/session.h"
#include "graph/block_segments.h"
#include "runtime/device.h"
#include "runtime/logger.h"

namespace qforge {
namespace {

std::string step_title(const SolveSteps::Step& step, size_t steps, const std::string& algorithm) {
  return !step.block.empty() ? algorithm + " " + step.block
         : steps == 1        ? algorithm
                             : algorithm + ", layers outside blocks";
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

void CompileSession::solve_in_steps(const std::vector<SolveSteps::Step>& steps, const std::string& algorithm,
                                    const StepSolve& solve) {
  if (!solve_on_kept_inputs(steps, algorithm, solve)) solve_from_model_inputs(steps, algorithm, solve);
}

// Each block runs on its kept inputs: one block's work per pass instead of the whole model's.
bool CompileSession::solve_on_kept_inputs(const std::vector<SolveSteps::Step>& steps, const std::string& algorithm,
                                          const StepSolve& solve) {
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
    add_note(algorithm + ": " + why + "; every block's inputs are computed from the model's inputs again");
    return false;
  }
  const c10::Device device = p.placement.device;
  const auto run_first = [this, device](torch::jit::Module& m, const std::string& method, const Batch& batch) {
    AutocastScope autocast(config_.autocast, device);
    return run_module(m, method, prepared_.binding, to_device(batch, device), prepared_.model->path());
  };
  const BlockOffload offload =
      config_.quantization_settings ? config_.quantization_settings->weights.gptq.offload : BlockOffload::Auto;
  BlockInputs inputs(calibration_source(), run_first, device, config_.autocast, offload);
  for (size_t s = 0; s < steps.size(); ++s) {
    const std::string title = step_title(steps[s], steps.size(), algorithm);
    const size_t segment = (*segment_of_step)[s];
    while (inputs.segment() < segment) {
      const std::string method = segments->methods[inputs.segment()];
      timer_.run(title + ": inputs", [&] { inputs.advance(segments->module, method); });
      log::info(title + ": block inputs kept, " + inputs.where());
    }
    const std::string method = segments->methods[segment];
    const Sweep sweep = [&](torch::jit::Module& observed) { inputs.sweep(observed, method); };
    set_weights(segments->module, solve_step(steps[s], title, segments->module, method, sweep, solve));
  }
  return true;
}

// Each step runs the model from its inputs, the earlier steps solved.
void CompileSession::solve_from_model_inputs(const std::vector<SolveSteps::Step>& steps, const std::string& algorithm,
                                             const StepSolve& solve) {
  const PreparedCompile& p = prepared_;
  const ShardSource shard = calibration_source();
  torch::jit::Module model = steps.size() > 1 ? clone_module(p.model->module()) : p.model->module();
  const Sweep sweep = [&](torch::jit::Module& observed) {
    for_each_batch(shard, [&](const Batch& batch) { run_mixed(observed, batch); });
  };
  for (size_t s = 0; s < steps.size(); ++s) {
    const auto solved =
        solve_step(steps[s], step_title(steps[s], steps.size(), algorithm), model, config_.model.method, sweep, solve);
    if (s + 1 < steps.size()) set_weights(model, solved);  // `model` is a clone then
  }
}

// One step: its layers' XᵀX over `sweep` of `method` of `model` (undefined for
// a layer no input of its weight's width reached), and their solve.
std::map<std::string, at::Tensor> CompileSession::solve_step(const SolveSteps::Step& step, const std::string& title,
                                                             torch::jit::Module& model, const std::string& method,
                                                             const Sweep& sweep, const StepSolve& solve) {
  const PreparedCompile& p = prepared_;
  std::vector<CalibrationPoint> points;
  for (const auto& name : step.layers) points.push_back({name, TensorQuantSettings{}, false, true});
  const CalibrationStatistics stats =
      qforge::calibrate(model, method, points, sweep, p.placement.device, *p.comm, timer_, title);
  std::vector<at::Tensor> hessians;
  for (size_t k = 0; k < points.size(); ++k) {
    const at::Tensor& h = stats.hessians[k];
    const auto& shape = plan_of(step.layers[k]).layer.weight_shape;
    const bool fits = shape.size() == 2 && h.defined() && h.size(0) == shape[1];
    hessians.push_back(fits ? h : at::Tensor());
  }
  return solve(step.layers, hessians, title);
}

void CompileSession::set_weights(torch::jit::Module& model, const std::map<std::string, at::Tensor>& weights) const {
  for (const auto& [layer, weight] : weights)
    submodule(model, layer, prepared_.model->path()).setattr("weight", weight);
}

}  // namespace qforge
