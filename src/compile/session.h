// One compile as a sequence of stages over state kept in one place:
//   prepare · smooth · calibrate · quantize · sensitivity · fine-tune · assemble ·
//   evaluate · export · write
// Every stage is collective (call it on every rank, in this order); a stage
// that can fail on some ranks runs as a collective phase, so a failure is
// reported once and no rank is left waiting. The dry run is `prepare` followed
// by the checks in plan/dry_run.cpp: one code path for the first stage.
#pragma once
#include <torch/script.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "compile/calibration.h"
#include "compile/phase_timer.h"
#include "data/batches.h"
#include "graph/input_scales.h"
#include "graph/model.h"
#include "output/output_dir.h"
#include "plan/solve_steps.h"
#include "prune/channel_groups.h"
#include "prune/channel_importance.h"
#include "prune/prune_weight.h"
#include "qforge/compile.h"
#include "qforge/runtime.h"
#include "runtime/communicator.h"
#include "runtime/device.h"

namespace qforge {

// What `prepare` leaves behind: the model on its device, bound to the data,
// its layers planned, and the activation points calibration will observe.
struct PreparedCompile {
  ComputePlacement placement;
  std::unique_ptr<Communicator> comm;  // NCCL between GPUs, MPI between CPU ranks
  std::optional<Model> model;
  DatasetInfo data;     // the calibration set (empty without one)
  CallBinding binding;  // how a batch becomes the method's arguments
  DataTransformFn transform;
  std::vector<LayerPlan> plans;  // one per quantizable layer
  bool quantizing = false;
  std::vector<CalibrationPoint> points;        // observed activations
  std::vector<int> point_of, output_point_of;  // plan index -> point index (-1: none)
  SolveSteps gptq_steps;                       // the order GPTQ solves its layers in
  // AWQ and SmoothQuant: the groups of layers reading one input, whether
  // each searches AWQ's scales (else SmoothQuant's), and AWQ's steps.
  std::vector<InputGroup> scale_groups;
  std::vector<bool> group_awq;
  SolveSteps awq_steps;
  SolveSteps prune_steps;  // the layers Wanda and SparseGPT prune, block by block
};

// A planned layer whose input no observer saw on any rank is not run as a
// layer by the method (its weight feeds fused or functional code, or a branch
// the data never takes): fullgraph refuses it by name, otherwise it stays in
// floating point with the reason. `reached` answers per activation point.
void keep_unreached_layers_float(const ExperimentConfig& config, const std::vector<int>& point_of,
                                 const std::function<bool(int point)>& reached, std::vector<LayerPlan>& plans);

// ConfigError (naming each layer and why) when no layer would be quantized and
// not every layer was skipped on purpose: such a compile would replace good
// artifacts with a floating-point model.
void refuse_quantizing_nothing(const std::vector<LayerPlan>& plans);

class CompileSession {
 public:
  CompileSession(const ExperimentConfig& config, const CompileCallbacks& callbacks, torch::jit::Module* input);
  CompileSession(const CompileSession&) = delete;
  CompileSession& operator=(const CompileSession&) = delete;

  void prepare();              // claim out_dir; load, bind, fold batch norms, plan layers and activation points
  void prune();                // pruning_settings: weights set to zero, the masks kept for the later stages
  void smooth();               // AWQ and SmoothQuant: input scales from the calibration data, applied to the model
  void calibrate();            // activation ranges over every rank's shard
  void quantize();             // weight and activation parameters per layer (GPTQ's solves among them)
  void measure_sensitivity();  // per-layer error; sensitivity_threshold keeps layers float
  bool fine_tune();            // false: stopped at a checkpoint (the run's only output)
  void assemble();             // the compiled TorchScript model
  void evaluate();             // compiled against float on evaluation_inputs
  void export_onnx();          // model.qforge.onnx (rank 0), run in onnxruntime when asked
  void write();                // the artifacts (rank 0)

  const PreparedCompile& prepared() const { return prepared_; }
  // Runs a module on one batch on the model's device, as calibration does.
  c10::IValue run(torch::jit::Module& module, const Batch& batch) const;
  PhaseTimer& timer() { return timer_; }
  CompileResult take_result() { return std::move(result_); }

 private:
  void observe_full_ranges(std::vector<LayerPlan>& plans);                      // is_model_pretrained: false
  void add_note(const std::string& note);                                       // logged, and in the report
  c10::IValue forward(torch::jit::Module& module, const Batch& batch) const;    // the batch where it is
  c10::IValue run_mixed(torch::jit::Module& module, const Batch& batch) const;  // with autocast
  ShardSource evaluation_source();
  ShardSource calibration_source() const;  // this rank's shard of calibration_inputs
  // A layer's weight in the float model the compile works from (scaled by `smooth`), detached.
  at::Tensor float_weight(const std::string& layer) const;
  // Raises a layer's input scale where its bias would not fit int32 (bias_headroom.h), with a warning.
  void keep_bias_in_int32(LayerResult& l) const;
  void plan_activation_points();
  void plan_weight_algorithms();  // algorithms that cannot apply to a layer fall back to rtn, with a note
  void plan_gptq_steps();         // the model's repeated blocks, in order
  void plan_input_scales();       // AWQ and SmoothQuant: the layers reading one input, and where 1/s folds
  std::vector<at::Tensor> smoothquant_group_scales(const std::vector<size_t>& groups);
  std::vector<at::Tensor> awq_group_scales(const std::vector<size_t>& groups, const std::string& phase,
                                           std::vector<double>& alphas);
  void solve_gptq_layers();  // step by step (block by block), each step's XᵀX on the solved model
  // The block-by-block pass GPTQ and pruning share (compile/hessian_steps.cpp):
  // each step's layers get their XᵀX on the model whose earlier steps are
  // solved; `solve` gets them (undefined where no input of the layer's width
  // reached it) and returns the weights the later steps compute with.
  using StepSolve = std::function<std::map<std::string, at::Tensor>(
      const std::vector<std::string>& layers, const std::vector<at::Tensor>& hessians, const std::string& title)>;
  void solve_in_steps(const std::vector<SolveSteps::Step>& steps, const std::string& algorithm,
                      const StepSolve& solve);
  bool solve_on_kept_inputs(const std::vector<SolveSteps::Step>& steps, const std::string& algorithm,
                            const StepSolve& solve);  // false: the blocks cannot be run alone
  void solve_from_model_inputs(const std::vector<SolveSteps::Step>& steps, const std::string& algorithm,
                               const StepSolve& solve);
  std::map<std::string, at::Tensor> solve_step(const SolveSteps::Step& step, const std::string& title,
                                               torch::jit::Module& model, const std::string& method,
                                               const Sweep& sweep, const StepSolve& solve);
  void set_weights(torch::jit::Module& model, const std::map<std::string, at::Tensor>& weights) const;
  void solve_and_share(const std::vector<size_t>& layers, const std::vector<at::Tensor>& hessians,
                       const std::string& phase);
  void claim_output_directory();
  void plan_layers_and_steps();  // prepare's planning, on the model as pruned
  void prune_channels();         // pruning_settings.method structured: channels removed from the model
  std::map<std::string, at::Tensor> reader_input_means(const std::vector<ChannelDependencyGroup>& groups);
  std::vector<at::Tensor> reader_taylor_scores(const std::vector<ChannelDependencyGroup>& groups);
  // pruning_settings.sensitivity_threshold: each group's sparsity (described[i].sparsity) by its measured error.
  void allocate_channel_sparsity(const std::vector<ChannelDependencyGroup>& groups,
                                 std::vector<ChannelGroup>& described, const std::vector<at::Tensor>& scores,
                                 torch::jit::Module& model, const WeightOf& weight);
  void plan_pruning_steps();
  bool reads_inputs_to_prune(const LayerPlan& plan) const;
  std::map<std::string, at::Tensor> prune_and_share(const std::vector<std::string>& names,
                                                    const std::vector<at::Tensor>& hessians, const std::string& title);
  std::vector<LayerPruning> allocate_sparsity(const std::vector<std::string>& names,
                                              const std::vector<at::Tensor>& hessians,
                                              const std::vector<LayerPruning>& planned, const std::string& title);
  void record_pruned(const LayerPlan& plan, const LayerPruning& chosen, const PrunedWeight& w,
                     const at::Tensor& hessian);
  const LayerPlan& plan_of(const std::string& layer) const;
  // The model compiled results are measured against: the dense one where pruning changed the model.
  torch::jit::Module& reference_model();

  const ExperimentConfig& config_;
  const CompileCallbacks& callbacks_;
  torch::jit::Module* input_;
  Runtime& rt_;
  torch::NoGradGuard no_grad_;
  MatmulPrecisionScope matmul_precision_;  // the compile's, restored for the caller after it
  PhaseTimer timer_;
  std::optional<OutputDirectoryLock> output_lock_;  // rank 0, while the session lives
  PreparedCompile prepared_;
  std::vector<ActivationObserver> observers_;
  torch::jit::Module base_;                                         // the model the compiled one is assembled from
  std::optional<torch::jit::Module> dense_;                         // the model before pruning (pruning_settings)
  std::map<std::string, LayerResult::Pruned> pruned_;               // layer -> what pruning did to it
  std::map<std::string, LayerResult::InputScaling> input_scaling_;  // layer -> its input's scales (smooth)
  CompileResult result_;
};

}  // namespace qforge
