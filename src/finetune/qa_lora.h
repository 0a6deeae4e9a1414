// Quantization-aware LoRA fine-tuning, data-parallel over the ranks.
//
// Each target layer computes with fq(W + s·B·A): W frozen, the adapters A, B
// trained through the quantizer of calibration (straight-through gradients of
// ATen's fake-quant ops). With learn_ranges the quantizers' scales train too
// (LSQ's gradient, the scale kept positive as scale·exp(u), u learned).
// Method `lora` is the plain baseline: adapters on the float weights, no fake
// quantization while training, the merged weights rounded to the grid after. Every step takes the next
// `batch_size` rows of the data (the global batch); rank r computes the
// loss of its contiguous part of them, scaled by its share of the global
// batch, so the gradients all-reduced with SUM are those of the global mean
// loss, and every rank takes the same AdamW step. After the last step the
// adapters are merged: W' = fq(W + s·B·A) is on the quantization grid, so
// quantizing it again changes nothing and the compiled model computes
// exactly what the fine-tuned one did.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "data/batches.h"
#include "runtime/communicator.h"
#include "qforge/config.h"
#include "graph/fake_quant_graph.h"
#include "qforge/runtime.h"

namespace qforge {

struct FineTuneTarget {
  LayerFakeQuant quant;         // the layer's calibrated quantization
  TensorQuantSettings weights;  // its weight settings (for the merge)
  at::Tensor weight;            // its float weight W
};

// Checkpoints of a fine-tuning run, and how this run continues or stops.
struct CheckpointPlan {
  std::string path;        // empty: no checkpoints
  int64_t every = 0;       // steps between checkpoints; 0: only when stopping early
  bool resume = true;      // continue from `path` when it exists
  int64_t stop_after = 0;  // steps this run takes before it checkpoints and stops; 0: to the end
};

struct FineTuneReport {
  bool finished = true;      // false: stopped early (checkpointed) by stop_after or a signal
  int stop_signal = 0;       // the signal some rank received (0: stop_after or finished)
  int64_t resumed_from = 0;  // steps a checkpoint had completed
  std::vector<double> loss;  // global mean loss of every step
  // layer -> its merged weight: fq(W + s·B·A) on the (learned) grid for
  // qa_lora; W + s·B·A in float for lora (to be quantized by the caller).
  std::map<std::string, at::Tensor> merged;
  std::map<std::string, LoraAdapter> adapters;      // the trained adapters
  std::map<std::string, at::Tensor> weight_scales;  // learn_ranges: layer -> learned weight scale
  std::map<std::string, at::Tensor> input_scales;   // learn_ranges: layer -> learned input scale
  double seconds = 0;
  int64_t samples = 0;               // rows processed over all ranks
  std::vector<double> step_seconds;  // wall time of each step of this run (ends in an all-reduce)
};

// Called every settings.eval_every steps on every rank (collectively) with
// the model being trained and the steps completed.
using FineTuneEvaluator = std::function<void(torch::jit::Module& student, int64_t step)>;

// Collective over `runtime` (one agreement per step) and `comm` (gradients;
// null with one rank). `others` are the quantized layers that are not
// targets: they compute quantized, frozen (float with method lora). `seed`
// makes the adapters' initialization and dropout the same on every rank.
// `reading` says how rows are read (transform, finiteness check, prefetch
// depth, the GPU they are copied to); its batch_size is unused: the steps'
// rows and accumulation_steps decide the micro-batches, and one reader
// prefetches them across step boundaries.
FineTuneReport fine_tune(const torch::jit::Module& model, const std::string& method,
                         const std::vector<FineTuneTarget>& targets, const std::vector<LayerFakeQuant>& others,
                         const FineTuneSettings& settings, int64_t seed, const DatasetInfo& data,
                         const SampleReaderOptions& reading, const ForwardFn& run, Communicator* comm,
                         const Runtime& runtime, const CheckpointPlan& checkpoints = {},
                         const FineTuneEvaluator& evaluate = {});

// The adapters' learning rate at `step` (0-based): linear warm-up, then cosine to 0.
double learning_rate_at(const FineTuneSettings& settings, int64_t step);

}  // namespace qforge
