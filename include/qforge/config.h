// The experiment: one struct is the truth. yaml-cpp fills it (config_yaml),
// it validates itself, and it is written back, resolved, beside the outputs.
// Every field maps to a clika_compile argument or to a cluster setting; the
// YAML key of each field is given in its comment and documented in README.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace qforge {

enum class Device { Cpu, Cuda, Auto };
enum class Autocast { Off, BFloat16, Float16 };
enum class MatmulPrecision { Highest, High };
enum class Target { None, TensorRT, OnnxRuntime, OpenVino, TensorRTLLM, LibTorch };
enum class Granularity { Tensor, Channel, Group };
enum class Observer { MinMax, Percentile, Entropy, Mse };
enum class WeightAlgorithm { Rtn, Gptq, Awq };
enum class SmoothingMethod { SmoothQuant };
enum class BlockOffload { Auto, Cpu, None };
enum class TransformOp { Cast, Scale, Normalize };
enum class Distillation { Mse, Kl };
enum class FineTuneMethod { QaLora, Lora };
enum class PruningMethod { Magnitude, Wanda, SparseGpt, Structured };
enum class ChannelImportance { L1, L2, Activation, Taylor };
enum class DType { Float32, Float64, Float16, BFloat16, Int64, Int32, Int16, Int8, UInt8, Bool };

// model:
struct ModelSettings {
  std::string path;                // path: TorchScript file (torch.jit.save)
  std::string method = "forward";  // method: method compiled (clika_compile's module_or_func)
};

// tracing_inputs: samples whose shapes define the traced graph and its dynamic axes.
struct TracingSettings {
  std::vector<std::string> files;          // files: HDF5 files; empty = calibration files
  std::vector<std::string> groups;         // groups: shape groups to use; empty = all
  std::vector<int64_t> batch_sizes = {1};  // batch_sizes: two differing sizes make axis 0 dynamic
};

// calibration_inputs: the calibration set, sharded across ranks.
struct CalibrationSettings {
  std::vector<std::string> files;   // files: HDF5 files (layout in README)
  std::vector<std::string> groups;  // groups: shape groups to use; empty = all
  int64_t batch_size = 8;           // batch_size: rows per model call
  int64_t max_samples = 0;          // max_samples: 0 = every row
  int64_t prefetch = 2;             // prefetch: batches read ahead (bounds memory)
  bool check_finite = true;         // check_finite: reject NaN/Inf rows
};

// data_transform: one step of clika_compile's data_transform_fn.
struct TransformStep {
  TransformOp op = TransformOp::Cast;  // op: cast | scale | normalize
  std::vector<std::string> inputs;     // inputs: input names it applies to; empty = all
  DType dtype = DType::Float32;        // dtype: target of cast
  double factor = 1.0;                 // factor: multiplier of scale
  std::vector<double> mean;            // mean: per channel, for normalize
  std::vector<double> std;             // std: per channel, for normalize
  int64_t axis = 1;                    // axis: channel axis of the batched tensor
};

// forward: clika_compile's forward_fn, as extra static keyword arguments.
struct ForwardSettings {
  std::map<std::string, std::string> kwargs;  // kwargs: name -> YAML scalar (bool/int/float/str)
};

// deployment_settings:
struct DeploymentSettings {
  Target target = Target::None;  // target: tensorrt | onnxruntime | openvino | tensorrt_llm | libtorch
  std::optional<bool> onnx;      // onnx: write model.qforge.onnx; null = for the targets that read ONNX
  int64_t opset = 0;             // opset: 0 = 17, or 21 with 4-bit weights
  bool evaluate_onnx = true;     // evaluate_onnx: also run the ONNX file on evaluation_inputs (onnxruntime)
  bool writes_onnx() const;
};

// weights.gptq: the GPTQ solve (algorithm gptq).
struct GptqSettings {
  double dampening = 0.01;   // dampening: added to the Hessian's diagonal, as a share of its mean
  bool act_order = false;    // act_order: quantize inputs in order of decreasing Hessian diagonal
  int64_t block_size = 128;  // block_size: columns updated together (speed only; same result up to rounding)
  // blocks: auto (the model's repeated blocks, found in the module tree) | none | a glob ("layers.*"):
  // block k+1 is calibrated on the outputs of the solved block k.
  std::string blocks = "auto";
  // offload: where each rank keeps its shard's block inputs between blocks: auto (the
  // device while they fit) | cpu (pinned host memory) | none (the device)
  BlockOffload offload = BlockOffload::Auto;
};

// weights.awq: the activation-aware scale search (algorithm awq; Lin et al., 2023).
struct AwqSettings {
  int64_t grid = 20;  // grid: exponents tried, 0, 1/grid, ..., (grid-1)/grid, of the inputs' mean |x|
  // blocks: as gptq.blocks: the layers searched together (memory: each step holds its layers' candidates)
  std::string blocks = "auto";
};

// activations.smoothing: SmoothQuant (Xiao et al., 2023) moves the range of
// each input channel from the activation to the weight before W8A8.
struct SmoothingSettings {
  SmoothingMethod method = SmoothingMethod::SmoothQuant;  // method: smoothquant
  double alpha = 0.5;  // alpha: s = max|x|^alpha / max|W|^(1-alpha); higher moves more onto the weights
};

// One tensor's quantization scheme (weights or activations).
struct TensorQuantSettings {
  bool enabled = true;                            // enabled: false keeps it floating point
  int64_t bits = 8;                               // bits: 2..8
  Granularity granularity = Granularity::Tensor;  // granularity: tensor | channel | group
  int64_t group_size = 128;                       // group_size: inputs per group (granularity group)
  bool symmetric = true;                          // symmetric: zero point fixed at 0
  bool is_signed = true;                          // signed: int range (else unsigned)
  Observer observer = Observer::MinMax;           // observer: minmax | percentile | entropy | mse
  double percentile = 99.99;                      // percentile: for observer percentile
  int64_t histogram_bins = 2048;                  // histogram_bins: for entropy / percentile / mse
};

// The weights' scheme, and how their values are chosen on its grid.
struct WeightQuantSettings : TensorQuantSettings {
  WeightAlgorithm algorithm = WeightAlgorithm::Rtn;  // algorithm: rtn | gptq | awq
  GptqSettings gptq;                                 // gptq: the solve's settings (algorithm gptq)
  AwqSettings awq;                                   // awq: the scale search's settings (algorithm awq)
  WeightQuantSettings() {
    granularity = Granularity::Channel;
    symmetric = is_signed = true;
  }
};

// The activations' scheme, and the smoothing that prepares them for it.
struct ActivationQuantSettings : TensorQuantSettings {
  std::optional<SmoothingSettings> smoothing;  // smoothing: null = none
  ActivationQuantSettings() { symmetric = is_signed = false; }
};

// quantization_settings:
struct QuantizationSettings {
  WeightQuantSettings weights;
  ActivationQuantSettings activations;
  std::optional<double> sensitivity_threshold;  // sensitivity_threshold: relative error above which a layer stays FP
};

// pruning_settings: weights set to zero before quantization, each layer's
// calibration inputs measured on the model whose earlier layers are pruned.
struct PruningSettings {
  PruningMethod method = PruningMethod::Wanda;  // method: magnitude | wanda | sparsegpt | structured
  double sparsity = 0.5;  // sparsity: share of each layer's weights (structured: of each group's channels) removed
  ChannelImportance importance = ChannelImportance::L2;  // importance: structured: l1 | l2 | activation | taylor
  std::string pattern = "unstructured";         // pattern: unstructured | N:M (2:4, 4:8): N kept of every M inputs
  double dampening = 0.01;                      // dampening: sparsegpt, as gptq.dampening
  int64_t block_size = 128;                     // block_size: sparsegpt: columns whose mask is chosen together
  std::string blocks = "auto";                  // blocks: as gptq.blocks: the layers pruned together, in order
  // sensitivity_threshold: relative output error above which a layer is pruned less (down to dense); null = off
  std::optional<double> sensitivity_threshold;
};

// Per-layer pruning override (layer_quantization_settings.<layer>.pruning).
struct PruningOverride {
  std::optional<bool> enabled;
  std::optional<PruningMethod> method;
  std::optional<double> sparsity;
  std::optional<std::string> pattern;
};

// Per-layer override: every field unset inherits the global setting.
struct TensorQuantOverride {
  std::optional<bool> enabled;
  std::optional<int64_t> bits;
  std::optional<Granularity> granularity;
  std::optional<int64_t> group_size;
  std::optional<bool> symmetric;
  std::optional<bool> is_signed;
  std::optional<Observer> observer;
  std::optional<double> percentile;
};

struct WeightQuantOverride : TensorQuantOverride {
  std::optional<WeightAlgorithm> algorithm;
};

// layer_quantization_settings: <layer name or glob>:
struct LayerQuantizationSettings {
  bool skip = false;                // skip: keep this layer in floating point
  WeightQuantOverride weights;      // weights: overrides of quantization_settings.weights
  TensorQuantOverride activations;  // activations: overrides of quantization_settings.activations
  PruningOverride pruning;          // pruning: overrides of pruning_settings
};

// compile_options.fine_tune: quantization-aware LoRA after calibration.
// Trains adapters A, B of each target layer through the quantizer: the
// layer computes with fq(W + (alpha/rank)·B·A), W frozen, on the calibration
// data, data-parallel over the ranks.
struct FineTuneSettings {
  bool enabled = false;  // enabled:
  FineTuneMethod method =
      FineTuneMethod::QaLora;       // method: qa_lora (through the quantizer) | lora (float, quantized after the merge)
  int64_t steps = 100;              // steps: optimizer steps
  int64_t batch_size = 32;          // batch_size: rows per step over all ranks (the global batch)
  int64_t accumulation_steps = 1;   // accumulation_steps: micro-batches per step (memory)
  double learning_rate = 1e-3;      // learning_rate: peak, after warm-up
  int64_t warmup_steps = 10;        // warmup_steps: linear warm-up, then cosine decay to 0
  double weight_decay = 0.0;        // weight_decay: AdamW's decoupled decay
  double max_grad_norm = 1.0;       // max_grad_norm: gradient clipping; 0 = off
  int64_t lora_rank = 8;            // lora_rank:
  double lora_alpha = 16.0;         // lora_alpha: scale = alpha / rank
  double lora_dropout = 0.0;        // lora_dropout: probability of dropping each rank component per step
  bool learn_ranges = false;        // learn_ranges: LSQ: weight and activation scales train too (qa_lora)
  int64_t teacher_cache_mb = 1024;  // teacher_cache_mb: memory for the teacher's outputs of rows seen again; 0 = none
  bool cuda_graphs = true;          // cuda_graphs: replay each micro-batch's kernels from CUDA graphs (GPU)
  Autocast teacher_autocast = Autocast::Off;  // teacher_autocast: off | bf16 | fp16: the teacher's forward (GPU)
  std::vector<std::string> targets;           // targets: layer names, globs or types; empty = every quantized weight
  Distillation distillation = Distillation::Mse;  // distillation: mse | kl against the float model's outputs
  double task_loss_weight = 0.0;                  // task_loss_weight: share of cross-entropy on labels (0..1)
  int64_t log_every = 10;                         // log_every: steps between progress lines
  int64_t eval_every = 0;  // eval_every: steps between evaluations on evaluation_inputs; 0 = none
  bool resume = true;      // resume: continue from <out_dir>/checkpoints/fine_tune.pt when present
  int64_t stop_after_steps =
      0;  // stop_after_steps: checkpoint and stop after this many steps of this run; 0 = run to the end
};

// compile_options: clika_compile's clika_compile_options argument.
struct CompileOptions {
  bool ptq = true;                   // ptq: post-training calibration
  bool sensitivity = false;          // sensitivity: per-layer sensitivity analysis
  FineTuneSettings fine_tune;        // fine_tune:
  int64_t checkpoint_every = 0;      // checkpoint_every: steps; 0 = none
  int64_t sensitivity_samples = 64;  // sensitivity_samples: calibration rows each layer's error is measured on
};

// resources: what `qforge submit` asks SLURM for.
struct Resources {
  int64_t nodes = 1;
  int64_t tasks_per_node = 0;  // ranks per node; 0 = one per GPU (1 without GPUs)
  int64_t gpus_per_node = 0;
  int64_t cpus_per_task = 1;
  std::string memory;  // e.g. "16G"
  std::string time;    // e.g. "01:00:00"
  std::string partition;
  std::string account;
};

struct ExperimentConfig {
  ModelSettings model;
  std::string graph_name;              // graph_name: name carried into artifacts
  std::string out_dir = "qforge_out";  // out_dir:
  std::string logs_dir;                // logs_dir: default <out_dir>/logs
  int64_t seed = 0;                    // seed:
  Device device = Device::Cpu;         // device: cpu | cuda | auto
  int64_t gpu_index = -1;              // gpu_index: the GPU of every rank; -1 = the rank's local rank
  Autocast autocast = Autocast::Off;   // autocast: off | bf16 | fp16 (calibration and fine-tuning on GPUs)
  MatmulPrecision matmul_precision = MatmulPrecision::Highest;  // matmul_precision: highest | high (TF32)
  std::optional<TracingSettings> tracing_inputs;
  std::optional<CalibrationSettings> calibration_inputs;
  std::optional<CalibrationSettings> evaluation_inputs;  // held-out samples: FP vs compiled, sharded too
  std::vector<TransformStep> data_transform;
  ForwardSettings forward;
  std::optional<DeploymentSettings> deployment_settings;
  std::optional<QuantizationSettings> quantization_settings;
  std::map<std::string, LayerQuantizationSettings> layer_quantization_settings;
  std::optional<PruningSettings> pruning_settings;
  CompileOptions compile_options;
  bool discard_input_model = true;
  bool is_model_pretrained = true;
  bool is_dry_run = false;
  bool skip_eval_set_mode = false;
  bool fullgraph = true;
  bool dynamic = true;
  bool disable = false;
  Resources resources;
  // sweep: settings to try, each a list of `--set` overrides; `qforge submit`
  // runs them as one SLURM array job, task i writing to <out_dir>/sweep-<i>.
  std::vector<std::vector<std::string>> sweep;

  // Effective logs directory.
  std::string effective_logs_dir() const;
  // Effective graph name: graph_name, or the model file's stem.
  std::string effective_graph_name() const;
  // Checks that need no file access (ranges, contradictions); throws ConfigError.
  void validate() const;
};

// Names used in YAML for the enums (e.g. "tensorrt_llm"), and their parsing.
template <class E>
const char* to_string(E value);
template <class E>
E enum_from_string(const std::string& text, const std::string& key_path);
// Every YAML name of an enum, in declaration order.
template <class E>
std::vector<std::string> enum_names();

// A pruning pattern: "unstructured" (m = 0), or "N:M", n kept of every m
// (1 <= n < m); ConfigError naming `key` otherwise.
struct SparsityPattern {
  int64_t n = 0, m = 0;
};
SparsityPattern parse_sparsity_pattern(const std::string& text, const std::string& key);

// Bytes of one element of dtype.
int64_t dtype_size(DType dtype);

}  // namespace qforge
