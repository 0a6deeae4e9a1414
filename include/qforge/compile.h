// qforge::compile: the library form of `qforge compile`. One call on every
// rank (collective); rank 0 writes the artifacts. Mirrors the seed's
// clika_compile: the ExperimentConfig holds every argument, the callbacks
// stand for data_transform_fn and forward_fn.
#pragma once
#include <torch/script.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "qforge/config.h"
#include "qforge/observer.h"
#include "qforge/plan.h"

namespace qforge {

// What happened to one quantizable layer.
struct LayerResult {
  LayerPlan plan;                     // settings and the planned decision
  bool quantized = false;             // final decision
  std::string reason;                 // why it stays floating point (empty when quantized)
  std::optional<WeightQuant> weight;  // weight quantization parameters
  QuantRange weight_range;
  std::optional<ActivationObserver::Result> input;  // input activation range and parameters
  QuantRange input_range;
  // The input's histogram, for the report page: `counts` over [lo, hi] of x, or of |x|
  // (symmetric); empty where the observer kept none (min/max).
  struct Histogram {
    double lo = 0, hi = 0;
    bool magnitude = false;
    std::vector<int64_t> counts;
  } input_histogram;
  std::optional<ActivationObserver::Result>
      output;  // output range, where the output meets a residual add (onnxruntime, openvino)
  QuantRange output_range;
  std::optional<double> sensitivity;     // relative output error with only this layer quantized
  std::optional<double> weight_sqnr_db;  // weight vs its quantized values (before fine-tuning)
  bool fine_tuned = false;               // its weight carries a merged QA-LoRA adapter
  int64_t weight_elements = 0;
};

// The compiled model against the floating-point one on evaluation_inputs.
// Predictions are class logits: one per row of a [batch, classes] output, one
// per position of a [batch, positions, classes] output (a language model).
struct EvaluationResult {
  int64_t rows = 0;
  int64_t predictions = 0;       // class predictions compared (0: the output is not logits)
  bool sequence = false;         // one prediction per position: perplexity applies
  int64_t labelled = 0;          // predictions with a label, for top-1 and cross-entropy
  int64_t fp_correct = 0;        // top-1 hits of the floating-point model
  int64_t compiled_correct = 0;  // top-1 hits of the compiled model
  int64_t top1_agreement = 0;    // predictions where both pick the same class
  double fp_nll = 0;             // summed cross-entropy of the labels (nats), floating-point model
  double compiled_nll = 0;       // the same, compiled model
  double output_sqnr_db = 0;     // compiled outputs against floating-point ones

  double fp_perplexity() const;  // exp(mean cross-entropy)
  double compiled_perplexity() const;
};

// One evaluation during fine-tuning (eval_every): the model being trained against the float model.
struct FineTuneEvaluation {
  int64_t step = 0;
  EvaluationResult result;
};

// The (QA-)LoRA fine-tuning of a compile.
struct FineTuneSummary {
  std::string method;                           // qa_lora | lora
  std::vector<std::string> layers;              // the adapted layers
  std::vector<double> loss;                     // global mean loss per step
  std::vector<FineTuneEvaluation> evaluations;  // every eval_every steps
  int64_t learned_ranges = 0;                   // quantization scales learned (learn_ranges)
  double seconds = 0;
  int64_t samples = 0;  // rows processed over all ranks
  // Wall time of every step of this run; the steps end in an all-reduce, so
  // it is the slowest rank's. The first steps include warm-up (allocator, cuDNN plans).
  std::vector<double> step_seconds;
};

struct PhaseTiming {
  std::string phase;
  std::vector<double> seconds_per_rank;
};

// The ONNX file of the compile and how it ran in onnxruntime on evaluation_inputs.
struct OnnxSummary {
  bool written = false;
  std::string bytes;  // the file's content until it is written
  int64_t opset = 0;
  int64_t file_bytes = 0;
  int64_t quantized_weights = 0, quantized_activations = 0;
  std::vector<std::string> notes;
  // The ONNX file (as "compiled") against the TorchScript model (as "float") on evaluation_inputs.
  std::optional<EvaluationResult> evaluation;
  std::string runtime;        // the onnxruntime that ran it
  std::string not_evaluated;  // why there is no evaluation (no onnxruntime found, ...)
};

struct CompileResult {
  std::string graph_name;
  bool dry_run = false;      // is_dry_run: only the plan was made
  bool disabled = false;     // disable: the model is returned unchanged
  bool stopped = false;      // fine-tuning stopped early; nothing but its checkpoint written
  int stop_signal = 0;       // the signal that stopped it (0: stop_after_steps)
  torch::jit::Module model;  // the compiled model (every rank)
  std::vector<LayerResult> layers;
  std::vector<std::string> folded_batch_norms;  // convolutions that absorbed a batch norm
  std::optional<EvaluationResult> evaluation;
  std::optional<FineTuneSummary> fine_tune;
  std::vector<PhaseTiming> phases;
  int64_t float_bytes = 0;                       // parameters and buffers of the input model
  int64_t deployed_bytes = 0;                    // the same with quantized weights at their bit width
  int64_t model_file_bytes = 0;                  // model.qforge.pt on disk (rank 0)
  std::map<std::string, std::string> artifacts;  // name -> path, written by rank 0
  OnnxSummary onnx;                              // model.qforge.onnx (rank 0)
  std::vector<std::string> notes;                // what the compile did otherwise than asked, and why
};

// Runs the compile the experiment describes. `input`, when given, is the model
// instead of config.model.path; with discard_input_model it may be modified
// (batch norms folded), otherwise it is left untouched. Throws qforge errors
// (ConfigError, DataError, ModelError) on every rank alike.
CompileResult compile(const ExperimentConfig& config, const CompileCallbacks& callbacks = {},
                      torch::jit::Module* input = nullptr);

}  // namespace qforge
