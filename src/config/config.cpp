// Checks of the experiment that need no file access.
#include "qforge/config.h"

#include <filesystem>
#include <sstream>

#include "qforge/deployment.h"
#include "qforge/errors.h"

namespace qforge {
namespace {

void check(bool ok, const std::string& key, const std::string& expected) {
  if (!ok) throw ConfigError(key + ": expected " + expected);
}

void check_tensor_settings(const TensorQuantSettings& s, const std::string& key) {
  check(s.bits >= 2 && s.bits <= 8, key + ".bits", "a width from 2 to 8, got " + std::to_string(s.bits));
  check(s.group_size > 0, key + ".group_size", "a positive size");
  check(s.percentile > 0 && s.percentile <= 100, key + ".percentile", "a percentile in (0, 100]");
  check(s.histogram_bins >= 16, key + ".histogram_bins", "at least 16 bins");
}

void check_weight_settings(const WeightQuantSettings& s, const std::string& key) {
  check_tensor_settings(s, key);
  check(s.gptq.dampening >= 0, key + ".gptq.dampening", "a non-negative share of the Hessian's mean diagonal");
  check(s.gptq.block_size > 0, key + ".gptq.block_size", "a positive column count");
  check(!s.gptq.blocks.empty(), key + ".gptq.blocks", "auto, none, or a glob naming the blocks");
  check(s.awq.grid >= 1 && s.awq.grid <= 1000, key + ".awq.grid", "1 to 1000 exponents");
  check(!s.awq.blocks.empty(), key + ".awq.blocks", "auto, none, or a glob naming the blocks");
}

void check_activation_settings(const ActivationQuantSettings& s, const std::string& key) {
  check_tensor_settings(s, key);
  if (s.smoothing)
    check(s.smoothing->alpha >= 0 && s.smoothing->alpha <= 1, key + ".smoothing.alpha", "a strength from 0 to 1");
}

void check_pruning_settings(const PruningSettings& s, bool has_calibration) {
  const std::string key = "pruning_settings";
  check(s.sparsity >= 0 && s.sparsity < 1, key + ".sparsity",
        "a share from 0 to below 1, got " + std::to_string(s.sparsity));
  const SparsityPattern pattern = parse_sparsity_pattern(s.pattern, key + ".pattern");
  check(s.dampening >= 0, key + ".dampening", "a non-negative share of the Hessian's mean diagonal");
  check(s.block_size > 0, key + ".block_size", "a positive column count");
  if (pattern.m > 0 && s.method == PruningMethod::SparseGpt)
    check(s.block_size % pattern.m == 0, key + ".block_size",
          "a multiple of M (" + std::to_string(pattern.m) + ") with pattern " + s.pattern);
  check(!s.blocks.empty(), key + ".blocks", "auto, none, or a glob naming the blocks");
  if (s.sensitivity_threshold)
    check(*s.sensitivity_threshold >= 0, key + ".sensitivity_threshold", "a non-negative relative error");
  if (s.method == PruningMethod::Structured) {
    check(pattern.m == 0, key + ".pattern", "unstructured with method structured (whole channels are removed)");
    if (s.sensitivity_threshold)
      check(has_calibration, key + ".sensitivity_threshold",
            "calibration_inputs: the channel groups' errors are measured on them");
    if (s.importance == ChannelImportance::Activation || s.importance == ChannelImportance::Taylor)
      check(has_calibration, key + ".importance",
            std::string("calibration_inputs: ") + to_string(s.importance) +
                " measures the channels on them (or importance: l1 or l2)");
    return;
  }
  if (s.method != PruningMethod::Magnitude || s.sensitivity_threshold)
    check(
        has_calibration, key + ".method",
        std::string("calibration_inputs: ") +
            (s.method != PruningMethod::Magnitude ? "wanda and sparsegpt measure" : "sensitivity_threshold measures") +
            " the layers' inputs on them (or method: magnitude)");
}

// Structured pruning removes channels from every layer a group couples: it is
// chosen for the whole model, and a layer can only be left out or pruned less.
void check_structured_override(const PruningOverride& o, const std::optional<PruningSettings>& settings,
                               const std::string& key) {
  const bool structured = settings && settings->method == PruningMethod::Structured;
  if (o.method)
    check(*o.method != PruningMethod::Structured && !structured, key + ".pruning.method",
          "no method per layer with structured pruning (set pruning_settings.method; per layer: enabled, sparsity)");
  if (o.pattern) check(!structured, key + ".pruning.pattern", "no pattern with method structured");
}

}  // namespace

SparsityPattern parse_sparsity_pattern(const std::string& text, const std::string& key) {
  if (text == "unstructured") return {};
  SparsityPattern p;
  char colon = 0, rest = 0;
  std::istringstream in(text);
  if (!(in >> p.n >> colon >> p.m) || colon != ':' || (in >> rest) || p.n < 1 || p.m <= p.n || p.m > 64)
    throw ConfigError(key + ": expected unstructured or N:M with 1 <= N < M <= 64 (2:4, 4:8), got '" + text + "'");
  return p;
}

std::string ExperimentConfig::effective_graph_name() const {
  return graph_name.empty() ? std::filesystem::path(model.path).stem().string() : graph_name;
}

std::string ExperimentConfig::effective_logs_dir() const { return logs_dir.empty() ? out_dir + "/logs" : logs_dir; }

void ExperimentConfig::validate() const {
  check(!model.path.empty(), "model.path", "the path of a TorchScript model file");
  check(!model.method.empty(), "model.method", "a method name, e.g. forward");
  check(!out_dir.empty(), "out_dir", "an output directory");
  for (const auto& [section, name] :
       {std::pair{&calibration_inputs, "calibration_inputs"}, std::pair{&evaluation_inputs, "evaluation_inputs"}}) {
    if (!*section) continue;
    const auto& c = **section;
    const std::string key = name;
    check(!c.files.empty(), key + ".files", "at least one HDF5 file");
    check(c.batch_size > 0, key + ".batch_size", "a positive batch size");
    check(c.max_samples >= 0, key + ".max_samples", "0 (all) or a positive count");
    check(c.prefetch >= 1, key + ".prefetch", "at least 1 batch");
  }
  if (tracing_inputs) {
    check(!tracing_inputs->batch_sizes.empty(), "tracing_inputs.batch_sizes", "at least one batch size");
    for (auto b : tracing_inputs->batch_sizes) check(b > 0, "tracing_inputs.batch_sizes", "positive batch sizes");
    check(!tracing_inputs->files.empty() || calibration_inputs, "tracing_inputs.files",
          "tracing files, or calibration_inputs to trace with");
  }
  for (size_t i = 0; i < data_transform.size(); ++i) {
    const auto& step = data_transform[i];
    const std::string key = "data_transform[" + std::to_string(i) + "]";
    if (step.op == TransformOp::Normalize) {
      check(!step.mean.empty() && step.mean.size() == step.std.size(), key,
            "normalize with 'mean' and 'std' lists of the same length");
      for (double s : step.std) check(s > 0, key + ".std", "positive standard deviations");
    }
  }
  if (deployment_settings) {
    const int64_t opset = deployment_settings->opset;
    check(opset == 0 || (opset >= 13 && opset <= 21), "deployment_settings.opset", "0 (automatic) or 13..21");
  }
  if (quantization_settings) {
    // clika_compile's ValueError: quantization needs a target and data, before any work.
    if (!deployment_settings || deployment_settings->target == Target::None)
      throw ConfigError(
          "quantization_settings is set but deployment_settings.target is not; "
          "choose one of tensorrt, onnxruntime, openvino, tensorrt_llm, libtorch");
    if (!calibration_inputs)
      throw ConfigError(
          "quantization_settings is set but calibration_inputs is not; "
          "calibration data is required to quantize");
    check_weight_settings(quantization_settings->weights, "quantization_settings.weights");
    check_activation_settings(quantization_settings->activations, "quantization_settings.activations");
    check_against_target(deployment_settings->target, quantization_settings->weights,
                         quantization_settings->activations, "quantization_settings");
    if (quantization_settings->sensitivity_threshold)
      check(*quantization_settings->sensitivity_threshold >= 0, "quantization_settings.sensitivity_threshold",
            "a non-negative relative error");
  }
  if (pruning_settings) check_pruning_settings(*pruning_settings, calibration_inputs.has_value());
  for (const auto& [pattern, layer] : layer_quantization_settings) {
    const std::string key = "layer_quantization_settings[" + pattern + "]";
    check(!pattern.empty(), "layer_quantization_settings", "non-empty layer names or globs");
    const PruningOverride& pruning = layer.pruning;
    if (pruning.sparsity)
      check(*pruning.sparsity >= 0 && *pruning.sparsity < 1, key + ".pruning.sparsity", "a share from 0 to below 1");
    if (pruning.pattern) parse_sparsity_pattern(*pruning.pattern, key + ".pruning.pattern");
    check_structured_override(pruning, pruning_settings, key);
    if (pruning.method && *pruning.method != PruningMethod::Magnitude)
      check(calibration_inputs.has_value(), key + ".pruning.method",
            "calibration_inputs: wanda and sparsegpt measure the layer's inputs on them (or method: magnitude)");
    if (pruning.enabled || pruning.method || pruning.sparsity || pruning.pattern)
      check(pruning_settings.has_value(), key + ".pruning", "pruning_settings, which its keys override");
    for (const TensorQuantOverride* o : {static_cast<const TensorQuantOverride*>(&layer.weights), &layer.activations}) {
      if (o->bits) check(*o->bits >= 2 && *o->bits <= 8, key, "bits from 2 to 8");
      if (o->group_size) check(*o->group_size > 0, key, "a positive group_size");
    }
  }
  if (compile_options.fine_tune.enabled) {
    const auto& f = compile_options.fine_tune;
    const std::string key = "compile_options.fine_tune";
    check(quantization_settings.has_value(), key + ".enabled",
          "quantization_settings: fine-tuning trains through the quantizer");
    check(f.steps > 0, key + ".steps", "a positive step count");
    check(f.batch_size > 0, key + ".batch_size", "a positive batch size");
    check(f.accumulation_steps >= 1 && f.accumulation_steps <= f.batch_size, key + ".accumulation_steps",
          "1 to batch_size micro-batches");
    check(f.learning_rate > 0, key + ".learning_rate", "a positive learning rate");
    check(f.warmup_steps >= 0, key + ".warmup_steps", "0 or more steps");
    check(f.lora_rank > 0, key + ".lora_rank", "a positive rank");
    check(f.lora_dropout >= 0 && f.lora_dropout < 1, key + ".lora_dropout", "a probability from 0 to below 1");
    check(!f.learn_ranges || f.method == FineTuneMethod::QaLora, key + ".learn_ranges",
          "method qa_lora (plain lora trains without the quantizer, so it has no ranges to learn)");
    check(f.max_grad_norm >= 0, key + ".max_grad_norm", "0 (off) or a positive norm");
    check(f.teacher_cache_mb >= 0, key + ".teacher_cache_mb", "0 (none) or a size in MiB");
    check(f.teacher_autocast == Autocast::Off || device != Device::Cpu, key + ".teacher_autocast",
          "off with device: cpu (mixed precision runs on GPUs; set device: cuda or auto)");
    check(f.task_loss_weight >= 0 && f.task_loss_weight <= 1, key + ".task_loss_weight", "a weight from 0 to 1");
    check(f.log_every > 0, key + ".log_every", "a positive step count");
    check(f.eval_every >= 0, key + ".eval_every", "0 (none) or a step count");
    check(f.eval_every == 0 || evaluation_inputs.has_value(), key + ".eval_every", "evaluation_inputs to evaluate on");
    check(f.stop_after_steps >= 0, key + ".stop_after_steps", "0 (run to the end) or a step count");
  }
  check(compile_options.checkpoint_every >= 0, "compile_options.checkpoint_every", "0 or a step count");
  check(compile_options.sensitivity_samples > 0, "compile_options.sensitivity_samples", "a positive row count");
  check(gpu_index >= -1, "gpu_index", "-1 (the rank's local rank) or a GPU number");
  check(autocast == Autocast::Off || device != Device::Cpu, "autocast",
        "off with device: cpu (mixed precision runs on GPUs; set device: cuda or auto)");
  check(resources.nodes >= 1, "resources.nodes", "at least 1 node");
  check(resources.tasks_per_node >= 0, "resources.tasks_per_node", "0 (one per GPU) or a rank count");
  check(resources.gpus_per_node >= 0, "resources.gpus_per_node", "0 or a GPU count");
  check(resources.cpus_per_task >= 1, "resources.cpus_per_task", "at least 1 core per rank");
  check(resources.gpus_per_node == 0 || resources.tasks_per_node == 0 ||
            resources.tasks_per_node == resources.gpus_per_node,
        "resources.tasks_per_node",
        "0 or gpus_per_node (" + std::to_string(resources.gpus_per_node) + "): qforge runs one rank per GPU");
  for (size_t i = 0; i < sweep.size(); ++i)
    check(!sweep[i].empty(), "sweep[" + std::to_string(i) + "]", "a list of KEY=VALUE overrides");
}

}  // namespace qforge
