// Quantization-aware LoRA fine-tuning, data-parallel over the ranks: the
// trainer's parts (setup, one step, save/resume, merge); fine_tune.h runs them.
//
// Each target layer computes with fq(W + s·B·A): W frozen, the adapters A, B
// trained through the quantizer of calibration (straight-through gradients of
// ATen's fake-quant ops). With learn_ranges the quantizers' scales train too
// (LSQ's gradient, the scale kept positive as scale·exp(u), u learned).
// Method `lora` is the plain baseline: adapters on the float weights, no fake
// quantization while training, the merged weights rounded to the grid after.
// Every step takes the next `batch_size` rows of the data (the global batch);
// rank r computes the loss of its contiguous part of them, scaled by its
// share of the global batch, so the gradients all-reduced with SUM are those
// of the global mean loss, and every rank takes the same AdamW step. After
// the last step the adapters are merged: W' = fq(W + s·B·A) is on the
// quantization grid, so quantizing it again changes nothing and the compiled
// model computes exactly what the fine-tuned one did.
#pragma once
#include <torch/script.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/sample_reader.h"
#include "finetune/checkpoint.h"
#include "finetune/micro_batch_runner.h"
#include "finetune/step_breakdown.h"
#include "finetune/teacher_cache.h"
#include "graph/fake_quant_graph.h"
#include "qforge/compile.h"
#include "qforge/runtime.h"
#include "runtime/communicator.h"

namespace torch::optim {
class AdamW;
}

namespace qforge {

struct FineTuneTarget {
  LayerFakeQuant quant;         // the layer's calibrated quantization
  TensorQuantSettings weights;  // its weight settings (for the merge)
  at::Tensor weight;            // its float weight W
  at::Tensor keep;              // a pruned layer's mask (bool, true = kept): its zeros stay zero; else undefined
};

// Checkpoints of a fine-tuning run, and how this run continues or stops.
struct CheckpointPlan {
  std::string path;        // empty: no checkpoints
  int64_t every = 0;       // steps between checkpoints; 0: only when stopping early
  bool resume = true;      // continue from `path` when it exists
  int64_t stop_after = 0;  // steps this run takes before it checkpoints and stops; 0: to the end
};

// Everything a fine-tuning run is given.
struct FineTuneOptions {
  std::string method = "forward";       // the model's method that is trained
  const torch::jit::Module* teacher = nullptr;  // the model whose outputs are learned (a dense one); null: the model
  std::vector<FineTuneTarget> targets;  // the layers that get adapters
  // The quantized layers that are not targets: they compute quantized, frozen
  // (float with method lora).
  std::vector<LayerFakeQuant> others;
  FineTuneSettings settings;
  int64_t seed = 0;  // the adapters' initialization and dropout, the same on every rank
  DatasetInfo data;
  // How rows are read (transform, finiteness check, prefetch depth, the GPU
  // they are copied to); its batch_size is unused: the steps' rows and
  // accumulation_steps decide the micro-batches.
  SampleReaderOptions reading;
  ForwardFn run;
  CheckpointPlan checkpoints;
};

// What the trained adapters change in the model.
struct MergedAdapters {
  // layer -> its merged weight: fq(W + s·B·A) on the (learned) grid for
  // qa_lora; W + s·B·A in float for lora (to be quantized by the caller).
  std::map<std::string, at::Tensor> weights;
  std::map<std::string, LoraAdapter> adapters;      // the trained adapters
  std::map<std::string, at::Tensor> weight_scales;  // learn_ranges: layer -> learned weight scale
  std::map<std::string, at::Tensor> input_scales;   // learn_ranges: layer -> learned input scale
};

class QaLoraTrainer {
 public:
  // Setup: the adapters (A seeded, B zero: training starts from the
  // calibrated model exactly), the student model with its quantizers, AdamW.
  // `comm`: the gradients' all-reduce (null with one rank).
  QaLoraTrainer(const torch::jit::Module& model, FineTuneOptions options, Communicator* comm);
  ~QaLoraTrainer();
  QaLoraTrainer(const QaLoraTrainer&) = delete;
  QaLoraTrainer& operator=(const QaLoraTrainer&) = delete;

  // Restores a checkpoint of the same run; returns its completed steps and losses.
  CheckpointState resume(const std::string& path);
  // Rank 0 writes a checkpoint after `steps_done` steps with their `losses`.
  void save(const std::string& path, int64_t steps_done, const std::vector<double>& losses) const;

  // One optimizer step (0-based `step`) over this rank's `micro_batches`
  // batches from `reader`; returns the step's global mean loss. Compute runs
  // inside runtime.collective_phase, so a failure on one rank ends every rank.
  double step(int64_t step, int64_t micro_batches, SampleReader& reader, const Runtime& runtime);

  // The student with the adapters as they will be merged (no dropout), for evaluation.
  torch::jit::Module& student_for_evaluation();

  // After the last step: the adapters merged into the targets' weights.
  MergedAdapters merge() const;

  // Keeps the teacher's outputs of the micro-batches that recur in `planned`
  // (every micro-batch this rank computes from now on, in order) within
  // settings.teacher_cache_mb (teacher_cache.h).
  void plan_teacher_outputs(const std::vector<BatchSlice>& planned);
  int64_t teacher_outputs_reused() const;
  int64_t graph_replays() const;  // micro-batches replayed from CUDA graphs (settings.cuda_graphs)

  // Each section's time per step (when QFORGE_STEP_BREAKDOWN=1).
  const StepBreakdown& breakdown() const { return breakdown_; }

 private:
  std::string fingerprint() const;  // what a checkpoint must match to be resumed here
  MicroBatchParts micro_batch_parts();
  void zero_gradients();

  FineTuneOptions options_;
  Communicator* comm_;
  double scale_;                        // lora_alpha / lora_rank
  std::vector<LayerFakeQuant> layers_;  // what the student computes with
  std::vector<at::Tensor> parameters_;  // A, B of every target in order, then the learned log-multipliers
  std::vector<at::Tensor> masks_;       // dropout masks over the adapters' rank components
  int64_t learned_ranges_ = 0;
  torch::jit::Module teacher_, student_;
  std::unique_ptr<TeacherCache> teacher_outputs_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  std::unique_ptr<MicroBatchRunner> runner_;
  StepBreakdown breakdown_;
};

// The adapters' learning rate at `step` (0-based): linear warm-up, then cosine to 0.
double learning_rate_at(const FineTuneSettings& settings, int64_t step);

}  // namespace qforge
