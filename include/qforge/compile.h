// The C++ API of qforge: compile() and dry_run(), the library forms of
// `qforge compile` and `qforge compile --dry-run`, and every value they take
// or return. One call on every rank (collective); rank 0 writes the
// artifacts. Mirrors clika_compile: the ExperimentConfig holds every
// argument, the callbacks stand for data_transform_fn and forward_fn.
#pragma once
#include <torch/script.h>

#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "qforge/config.h"

namespace qforge {

// ---- The calibration data, as its HDF5 files describe it (README, "Calibration data") ----

enum class InputKind { Tensor, Tuple, Dict };
const char* to_string(InputKind kind);

struct ArraySpec {
  std::string name;                // input name, or "labels"
  DType dtype = DType::Float32;    // type delivered (file types widen to the nearest supported one)
  std::vector<int64_t> row_shape;  // shape of one row (without axis 0)
};

struct ShapeGroup {
  std::string file;
  std::string name;  // group name under /samples
  int64_t rows = 0;
  std::vector<ArraySpec> inputs;  // in input_names order
  bool has_labels = false;
  ArraySpec labels;
  std::string path() const { return file + ":/samples/" + name; }
};

struct DatasetInfo {
  InputKind kind = InputKind::Tensor;
  std::vector<std::string> input_names;
  std::vector<ShapeGroup> groups;
  int64_t total_rows() const;
  std::vector<int64_t> group_rows() const;
  // Bytes of `rows` rows of the largest group (inputs and labels).
  int64_t bytes_per_row_max() const;
};

// Rows [begin, end) of the global row space (every group's rows, groups in order).
struct RowRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
  bool operator==(const RowRange& o) const { return begin == o.begin && end == o.end; }
};

struct Batch {
  std::vector<at::Tensor> inputs;  // in DatasetInfo::input_names order
  at::Tensor labels;               // undefined when the file has none
  int group = 0;                   // index into DatasetInfo::groups
  int64_t global_begin = 0;        // global index of the first row
  int64_t rows() const { return inputs.empty() ? 0 : inputs[0].size(0); }
};

// clika_compile's data_transform_fn: edits a batch in place before the model sees it.
using DataTransformFn = std::function<void(Batch&, const DatasetInfo&)>;

// ---- The model, as qforge sees it ----

struct LayerInfo {
  std::string name;  // "layer1.0.conv1": the key of per-layer settings
  std::string type;  // "Conv2d" (TorchScript class, without module path or mangling)
  std::string qualified_type;
  int64_t parameters = 0;             // this module's own parameters (not its children's)
  std::vector<int64_t> weight_shape;  // empty when it has no 'weight'
  bool has_children = false;
  bool quantizable = false;
  bool linear = false;  // computes x·Wᵀ + b with a 2-D weight (nn.Linear, or a module handing its weight to linear)
  std::string reason;   // why it is not quantizable (empty when it is)
  std::string shares_weight_with;  // the first other layer whose weight is this one's tensor (tied), or empty
};

struct MethodArgument {
  std::string name;
  std::string type;  // TorchScript type, e.g. "Tensor", "Dict(str, Tensor)"
  bool has_default = false;
};

struct MethodSignature {
  std::string method;
  std::vector<MethodArgument> arguments;  // without self
  std::string returns;
  std::string to_string() const;  // "forward(x: Tensor, mask: Tensor=None) -> Tensor"
};

// Dynamic axes: an axis is dynamic when its size differs between any two tracing samples.
struct InputAxes {
  std::string input;
  std::vector<int64_t> min_shape;  // per axis, smallest size seen
  std::vector<int64_t> max_shape;  // per axis, largest size seen
  std::vector<int64_t> dynamic;    // axes whose size varies
};

// ---- Callbacks of compile() and dry_run() ----

// How one batch is fed to the model (clika_compile's forward_fn): receives the
// module to run (the model or a rewritten copy) and the batch.
using ForwardFn = std::function<c10::IValue(torch::jit::Module& module, const Batch& batch)>;

struct FineTuneProgress;

// Callbacks of the C++ API (clika_compile's data_transform_fn and forward_fn).
struct CompileCallbacks {
  DataTransformFn data_transform;  // when set, replaces the YAML data_transform list
  ForwardFn forward;               // when set, replaces binding the data to the method's arguments
  // After every fine-tuning step, on every rank. Unset: rank 0 logs a line
  // every log_every steps and every held-out evaluation.
  std::function<void(const FineTuneProgress&)> fine_tune_progress;
};

// ---- The plan: what happens to each layer and which rows each rank reads ----

// The pruning planned for one layer: pruning_settings with its overrides.
struct LayerPruning {
  PruningMethod method = PruningMethod::Magnitude;
  double sparsity = 0;   // share of the weights set to zero (1 - n/m for N:M)
  int64_t n = 0, m = 0;  // N:M: n kept of every m inputs; m = 0: unstructured
  std::string note;      // what was planned otherwise than asked, and why (wanda on a convolution: magnitude)
  std::string pattern() const;  // "unstructured" or "2:4"
};

// Structured pruning (method: structured): channels the graph couples, removed
// together from every layer that writes or reads them.
struct ChannelGroup {
  std::vector<std::string> producers;  // layers whose output channels these are
  std::vector<std::string> readers;    // layers reading them: depthwise convolutions, then consumers
  int64_t channels = 0;
  int64_t kept = 0;          // channels kept (= channels when the group stays whole)
  std::vector<int64_t> kept_channels;  // their indices, ascending (empty when the group stays whole)
  double sparsity = 0;       // the share of channels to remove: asked, or sensitivity_threshold's choice
  std::string reason;        // why every channel is kept (empty when pruned)
};

struct StructuredPruning {
  std::string importance;  // l1 | l2 | activation | taylor
  std::vector<ChannelGroup> groups;
  int64_t dense_parameters = 0, parameters = 0;  // the model's parameters before and after
};

struct LayerPlan {
  LayerInfo layer;
  bool quantize = false;
  std::string reason;                // why it is skipped (empty when quantized)
  bool kept_by_choice = false;       // skipped because the experiment says so, not because a setting cannot apply
  bool tied = false;                 // computes with layer.shares_weight_with's weight, quantized there
  std::vector<std::string> matched;  // layer_quantization_settings keys that apply, in order
  WeightQuantSettings weights;       // effective settings, overrides applied
  TensorQuantSettings activations;
  bool smoothed = false;  // activations.smoothing scales its input (SmoothQuant)
  std::optional<LayerPruning> pruning;  // null: the layer stays dense
  std::string dense_reason;             // with pruning_settings: why the layer stays dense
};

struct RankShard {
  int rank = 0;
  std::string host;
  RowRange rows;
  int64_t batches = 0;
  int64_t peak_rss_bytes = 0;  // measured after reading the shard and running one batch per group
};

struct Plan {
  std::string graph_name;
  MethodSignature signature;
  int64_t parameters = 0;
  int64_t parameter_bytes = 0;
  std::vector<LayerPlan> layers;
  std::vector<LayerInfo> all_layers;
  DatasetInfo data;
  std::vector<RankShard> shards;
  std::vector<InputAxes> axes;
  std::optional<StructuredPruning> structured;  // the channel groups and what each keeps
  int64_t estimated_bytes_per_rank = 0;
  std::string resolved_config;  // the experiment as resolved (YAML), recorded in plan.json
  std::string to_text() const;
  std::string to_json() const;
};

// The dry run: validates config, data (every row of this rank's shard) and
// model (one batch per shape group, and every tracing sample) on every rank;
// rank 0 prints the plan and writes <out_dir>/plan.json. Collective: call on
// every rank. Returns the plan (complete on rank 0).
// It runs the compile's first stage (load, bind, fold, plan), so a dry run that
// passes means the compile's first stage passes; layers the data never runs are
// found here (one batch per shape group with the calibration observers in place).
// `input`: a module in memory (C++ API), as compile() takes it.
Plan dry_run(const ExperimentConfig& config, const CompileCallbacks& callbacks = {},
             torch::jit::Module* input = nullptr);

// ---- Quantization parameters ----

// The integer range of a quantized tensor: [-2^(b-1), 2^(b-1)-1] signed, [0, 2^b-1] unsigned.
struct QuantRange {
  int64_t qmin = -128;
  int64_t qmax = 127;
};

// Scale (float32) and zero point (int32) per tensor ([1]) or per channel ([C]).
struct QParams {
  at::Tensor scale;
  at::Tensor zero_point;
};

// Weights need no reduction (every rank holds the same ones): per tensor,
// per output channel (axis 0), or per group of `group_size` inputs, where the
// weight is viewed as [out * in/group_size, group_size] and quantized per row.
struct WeightQuant {
  QParams qparams;
  int64_t axis = -1;                // -1 per tensor, 0 per channel/row
  std::vector<int64_t> view_shape;  // group granularity: the 2-D view quantized per row
};

// An activation's calibrated float range and its quantization parameters.
struct ActivationRange {
  double lo = 0, hi = 0;
  QParams qparams;
};

// ---- What compile() returns ----

// What happened to one quantizable layer.
struct LayerResult {
  LayerPlan plan;                     // settings and the planned decision
  bool quantized = false;             // final decision
  std::string reason;                 // why it stays floating point (empty when quantized)
  std::optional<WeightQuant> weight;  // weight quantization parameters
  QuantRange weight_range;
  // algorithm gptq: the weight the solve chose, on the grid of `weight`; the
  // layer computes with it instead of its float weight. Undefined otherwise.
  at::Tensor solved_weight;
  // AWQ or SmoothQuant: the layer's input channels are divided by per-channel
  // scales and its weight's input columns multiplied by them (the float model
  // computes the same), before quantization.
  struct InputScaling {
    std::string method;                    // "awq" | "smoothquant"
    double alpha = 0;                      // the exponent chosen (awq) or set (smoothquant)
    std::string divided_in;                // where the division lives: "<layer>.weight" folded, or "explicit multiply"
    std::vector<std::string> shared_with;  // the other layers reading the same input, scaled alike
    double max_scale = 0, min_scale = 0;
  };
  std::optional<InputScaling> input_scaling;
  std::optional<ActivationRange> input;  // input activation range and parameters
  QuantRange input_range;
  // The input's histogram, for the report page: `counts` over [lo, hi] of x, or of |x|
  // (symmetric); empty where the observer kept none (min/max).
  struct Histogram {
    double lo = 0, hi = 0;
    bool magnitude = false;
    std::vector<int64_t> counts;
  } input_histogram;
  std::optional<ActivationRange> output;  // output range, where the output meets a residual add (onnxruntime, openvino)
  QuantRange output_range;
  std::optional<double> sensitivity;     // relative output error with only this layer quantized
  std::optional<double> weight_sqnr_db;  // weight vs its quantized values (before fine-tuning)
  bool fine_tuned = false;               // its weight carries a merged QA-LoRA adapter
  // What pruning did to the layer's weight (pruning_settings): the mask
  // (bool, true = kept), held through quantization and fine-tuning.
  struct Pruned {
    std::string method;     // magnitude | wanda | sparsegpt
    std::string pattern;    // unstructured | N:M
    double planned = 0;     // the sparsity asked for
    double sparsity = 0;    // the share of zeros in the weight as pruned
    std::optional<double> output_error;  // relative output error on the calibration inputs (Linear layers)
    at::Tensor mask;
  };
  std::optional<Pruned> pruned;
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

// The fine-tuning after one step (CompileCallbacks::fine_tune_progress).
struct FineTuneProgress {
  int64_t step = 0;                            // steps completed
  int64_t steps = 0;                           // steps in all
  double loss = 0;                             // the step's global mean loss
  double learning_rate = 0;                    // the step's learning rate
  double samples_per_second = 0;               // rows over all ranks per second, since this run started
  double eta_seconds = 0;                      // to the last step, at that rate
  std::optional<EvaluationResult> evaluation;  // the held-out evaluation made after this step (eval_every)
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
  // Micro-batches (on rank 0) whose teacher outputs were reused from an
  // earlier epoch instead of computed again (teacher_cache_mb).
  int64_t teacher_outputs_reused = 0;
  // Micro-batches (on rank 0) replayed from CUDA graphs (cuda_graphs).
  int64_t graph_replays = 0;
};

struct PhaseTiming {
  std::string phase;
  std::vector<double> seconds_per_rank;
  // Collectives rank 0 took part in during the phase, and their payload (each
  // call's tensor as one rank contributes it): the traffic a scaling model needs.
  int64_t collectives = 0;
  int64_t collective_bytes = 0;
  // The most memory each rank held during the phase: the tensors allocated on
  // its GPU, or the process's resident set on a CPU rank.
  std::vector<int64_t> peak_bytes_per_rank;
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
  // The file against the TorchScript model on fresh inputs (every shape of the data, and each
  // dynamic axis at a size the data lacks): one line per batch with each output's SQNR.
  std::vector<std::string> verified_on;
  double verified_worst_db = std::numeric_limits<double>::infinity();
  // The same inputs with onnxruntime's optimizations on (integer kernels), and a note when below the threshold.
  double verified_optimized_worst_db = std::numeric_limits<double>::infinity();
  std::string optimized_note;
  std::string not_verified;  // why it was not run (no onnxruntime found)
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
  std::optional<StructuredPruning> structured;  // channels removed (pruning_settings.method: structured)
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
