// qforge::compile, one stage after another (compile/session.h): prepare the
// model, calibrate across ranks, choose quantization parameters, measure
// sensitivity, fine-tune, assemble the compiled model, evaluate it, export
// it, and write the artifacts on rank 0. Read top to bottom; compile() at the
// end is the whole sequence.
#include "compile/session.h"
#include "plan/layer_selection.h"

#include <algorithm>
#include <optional>
#include <map>
#include <set>
#include <sstream>
#include <tuple>
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "compile/artifacts.h"
#include "compile/evaluation.h"
#include "compile/fine_tune_progress.h"
#include "compile/onnx_stage.h"
#include "compile/sensitivity.h"
#include "finetune/fine_tune.h"
#include "graph/fake_quant_graph.h"
#include "plan/solve_steps.h"
#include "quant/bias_headroom.h"
#include "quant/gptq.h"
#include "qforge/errors.h"
#include "runtime/logger.h"
#include "util/text.h"

namespace qforge {
namespace {

// How a sample set's rows are read: its batching, prefetch and finiteness
// check, the transform, and the rank's GPU they are copied to (if any).
SampleReaderOptions reader_options(const CalibrationSettings& settings, const DataTransformFn& transform,
                                   const c10::Device& device) {
  return {settings.batch_size, settings.prefetch, settings.check_finite, transform,
          device.is_cuda() ? device.index() : -1};
}

// A sample set's shard for this rank, in whole batches of the one-rank
// batching, read straight onto the rank's GPU when it has one.
ShardSource shard_of(const DatasetInfo& info, const CalibrationSettings& settings, const DataTransformFn& transform,
                     const Runtime& rt, const c10::Device& device) {
  return {info, shard_whole_batches(info.group_rows(), settings.batch_size, rt.rank(), rt.size()),
          reader_options(settings, transform, device)};
}

LayerFakeQuant fake_quant_of(const LayerResult& l) {
  LayerFakeQuant f;
  f.layer = l.plan.layer.name;
  f.weight = l.weight;
  f.weight_range = l.weight_range;
  f.weight_value = l.solved_weight;
  if (l.input) f.input = l.input->qparams;
  f.input_range = l.input_range;
  if (l.output) f.output = l.output->qparams;
  f.output_range = l.output_range;
  return f;
}

// The observer's histogram folded into at most 64 bins, for the report page.
LayerResult::Histogram display_histogram(const ActivationObserver& observer, bool symmetric) {
  LayerResult::Histogram h;
  const auto& counts = observer.histogram();
  if (counts.empty()) return h;
  std::tie(h.lo, h.hi) = observer.histogram_edges();
  h.magnitude = symmetric;
  const size_t fold = (counts.size() + 63) / 64;
  h.counts.assign((counts.size() + fold - 1) / fold, 0);
  for (size_t i = 0; i < counts.size(); ++i) h.counts[i / fold] += counts[i];
  return h;
}

// Bytes of a quantized weight deployed at its width, with one float32 scale
// and one 8-bit zero point per row of parameters.
int64_t deployed_weight_bytes(const LayerResult& l) {
  const int64_t params = l.weight->qparams.scale.numel();
  return (l.weight_elements * l.plan.weights.bits + 7) / 8 + params * 5;
}

// A traced model reads a tied table through one layer (an embedding) for both
// uses; the other (the output layer) still multiplies activations with it. Its
// inputs are quantized as that layer's settings say, through the layer the
// graph reads: a W8A8 target then runs the output layer in int8 like every
// other one (a float input before an int8 weight is left to the runtime, which
// onnxruntime quantizes on the fly, unlike the TorchScript model).
void quantize_tied_inputs(const LayerPlan& tied, std::vector<LayerPlan>& plans) {
  if (!tied.activations.enabled) return;
  for (auto& owner : plans)
    if (owner.layer.name == tied.layer.shares_weight_with && owner.quantize && !owner.activations.enabled)
      owner.activations = tied.activations;
}

bool cpu_multiplies_half() {
  try {
    at::mm(at::ones({2, 2}, at::kHalf), at::ones({2, 2}, at::kHalf));
    return true;
  } catch (const c10::Error&) {
    return false;
  }
}

// A bfloat16 or float16 model compiles in its own dtype (its statistics and
// solves in float32 or float64 regardless), except where that cannot run:
// fine-tuning trains float32 adapters on float32 weights, and some CPUs'
// LibTorch has no float16 matrix products. Why it is cast, if it is.
std::optional<std::string> computes_in_float32(const torch::jit::Module& model, const ExperimentConfig& config,
                                               const c10::Device& device) {
  const at::ScalarType held = module_float_dtype(model);
  if (held != at::kBFloat16 && held != at::kHalf) return std::nullopt;
  const std::string was = "the model is held in " + std::string(c10::toString(held)) + "; ";
  if (config.compile_options.fine_tune.enabled && !config.disable)
    return was + "fine-tuning trains in float32, so the model was cast to float32 and model.qforge.pt is float32";
  if (held == at::kHalf && device.is_cpu() && !cpu_multiplies_half())
    return was +
           "this LibTorch has no float16 matrix products on the CPU, so the model was cast to float32 and "
           "model.qforge.pt is float32 (compile on a GPU to keep float16)";
  return std::nullopt;
}

// Inputs go to the method by position: a name that differs from the argument
// it reaches is said, so a file written for another model shows.
void say_how_inputs_bind(const CallBinding& binding, const MethodSignature& signature) {
  if (binding.mode != CallBinding::Mode::Positional) return;
  for (size_t i = 0; i < binding.names.size() && i < signature.arguments.size(); ++i)
    if (binding.names[i] != signature.arguments[i].name)
      log::info("the data's input '" + binding.names[i] + "' is passed as argument " + std::to_string(i) + " '" +
                signature.arguments[i].name + "' of " + signature.method + " (inputs bind by position)");
}

bool observed_anything(const ActivationObserver& observer) {
  return std::isfinite(observer.observed_min()) && std::isfinite(observer.observed_max());
}

}  // namespace

CompileSession::CompileSession(const ExperimentConfig& config, const CompileCallbacks& callbacks,
                               torch::jit::Module* input)
    : config_(config),
      callbacks_(callbacks),
      input_(input),
      rt_(Runtime::get()),
      matmul_precision_(config.matmul_precision),
      timer_(rt_) {
  result_.graph_name = config.effective_graph_name();
  result_.disabled = config.disable;
}

c10::IValue CompileSession::forward(torch::jit::Module& module, const Batch& batch) const {
  if (callbacks_.forward) return callbacks_.forward(module, batch);
  return run_module(module, config_.model.method, prepared_.binding, batch, prepared_.model->path());
}

// Batches reach the method on the model's device (the forward callback's contract).
c10::IValue CompileSession::run(torch::jit::Module& module, const Batch& batch) const {
  return forward(module, to_device(batch, prepared_.placement.device));
}

// Calibration and fine-tuning may run in mixed precision; evaluation measures the model as deployed.
c10::IValue CompileSession::run_mixed(torch::jit::Module& module, const Batch& batch) const {
  AutocastScope autocast(config_.autocast, prepared_.placement.device);
  return run(module, batch);
}

// ---- prepare: load, bind, fold, plan -------------------------------------

void CompileSession::prepare() {
  PreparedCompile& p = prepared_;
  const std::string& method = config_.model.method;
  p.quantizing = config_.quantization_settings.has_value() && !config_.disable;
  timer_.run("load", [&] {
    claim_output_directory();
    p.placement = select_device(config_, rt_);
    timer_.measure_memory_on(p.placement.device);
    p.model =
        input_ ? Model::wrap(config_.discard_input_model ? *input_ : clone_module(*input_), "the input module", method)
               : Model::load(config_.model.path, method);
    move_module(p.model->module(), p.placement.device);
    if (const auto why = computes_in_float32(p.model->module(), config_, p.placement.device)) {
      cast_to_float32(p.model->module());
      add_note(*why);
    }
    const auto& transposed = p.model->transposed_layers();
    if (!transposed.empty())
      log::info(std::to_string(transposed.size()) +
                " layer(s) holding their weight transposed (GPT-2's Conv1D: addmm(bias, x, weight)) compute as "
                "Linear layers: " +
                join(transposed));
    if (!config_.skip_eval_set_mode) p.model->module().eval();
    result_.float_bytes = p.model->parameter_bytes();
    if (config_.disable) return;
    if (config_.calibration_inputs) {
      const auto& cal = *config_.calibration_inputs;
      p.data = inspect_dataset(cal.files, cal.groups, cal.max_samples);
      if (!callbacks_.forward) {
        p.binding = p.model->bind(p.data, config_.forward.kwargs);
        say_how_inputs_bind(p.binding, p.model->signature());
      }
      p.transform =
          callbacks_.data_transform ? callbacks_.data_transform : make_transform(config_.data_transform, p.data);
    }
    if (!p.model->module().is_training()) result_.folded_batch_norms = p.model->fold_conv_batch_norm();
  });
  // One communicator per job: NCCL between GPUs, MPI between CPU ranks (and
  // between ranks sharing a GPU, which NCCL refuses).
  const c10::Device& device = p.placement.device;
  p.comm =
      device.is_cuda() && !p.placement.gpu_shared ? make_nccl_communicator(device.index()) : make_mpi_communicator();
  if (device.is_cuda())
    log::info("rank " + std::to_string(rt_.rank()) + " on " + rt_.host() + " computes on " + device.str() +
              ", collectives over " + p.comm->backend() +
              (config_.autocast == Autocast::Off ? "" : std::string(", autocast ") + to_string(config_.autocast)) +
              (config_.matmul_precision == MatmulPrecision::Highest ? "" : ", float32 matrix products in TF32"));
  if (!config_.disable && config_.pruning_settings && config_.pruning_settings->method == PruningMethod::Structured)
    prune_channels();
  if (!config_.disable) timer_.run("plan", [&] { plan_layers_and_steps(); });
  base_ = p.model->module();  // assembled from the float model, or fine-tuning's copy of it
  plan_activation_points();
}

// Every layer's plan on the model as loaded (and pruned), the steps the
// block-by-block algorithms take, and the checks that need them.
void CompileSession::plan_layers_and_steps() {
  PreparedCompile& p = prepared_;
  const std::string& method = config_.model.method;
  p.plans = plan_layers(p.model->layers(), config_);
  plan_weight_algorithms();
  if (!config_.is_model_pretrained) observe_full_ranges(p.plans);
  const auto reached = layers_read_by(p.model->module(), method);
  const auto is_reached = [&](const std::string& layer) {
    return std::find(reached.begin(), reached.end(), layer) != reached.end();
  };
  for (auto& plan : p.plans) {
    if (!plan.quantize || is_reached(plan.layer.name)) continue;
    if (!plan.layer.shares_weight_with.empty() && is_reached(plan.layer.shares_weight_with)) {
      // A traced graph reads a tied weight through one of its layers only.
      plan.quantize = false;
      plan.tied = true;
      plan.kept_by_choice = true;
      plan.reason = "computes with the weight of '" + plan.layer.shares_weight_with + "' (tied), quantized there";
      quantize_tied_inputs(plan, p.plans);
      continue;
    }
    if (config_.fullgraph)
      throw ModelError(
          "layer '" + plan.layer.name + "': " + method +
          " does not read its weight in a way qforge can "
          "rewrite (or does not use the layer); skip it in layer_quantization_settings or set fullgraph: false");
    plan.quantize = false;
    plan.reason = method + " does not read its weight directly (fullgraph: false)";
  }
  if (p.quantizing) refuse_quantizing_nothing(p.plans);
  plan_gptq_steps();
  plan_pruning_steps();
  plan_input_scales();
  if (!config_.compile_options.ptq)
    for (const auto& plan : p.plans)
      if (plan.quantize && (plan.activations.enabled || plan.weights.algorithm != WeightAlgorithm::Rtn))
        throw ConfigError("compile_options.ptq is false but layer '" + plan.layer.name + "' " +
                          (plan.activations.enabled ? std::string("quantizes activations, whose ranges")
                                                    : std::string("chooses its weight with ") +
                                                          to_string(plan.weights.algorithm) + ", whose statistics") +
                          " only calibration measures; enable ptq, or set "
                          "quantization_settings.activations.enabled: false and weights.algorithm: rtn");
}

// Rank 0 locks out_dir and checks, before any work, that it can hold the
// artifacts: about twice the model file (TorchScript and ONNX) and the reports.
void CompileSession::claim_output_directory() {
  if (!rt_.is_root()) return;
  output_lock_.emplace(config_.out_dir);
  std::error_code ec;
  const auto model_bytes = input_ ? 0 : std::filesystem::file_size(config_.model.path, ec);
  check_output_directory(config_.out_dir, 2 * static_cast<int64_t>(ec ? 0 : model_bytes) + (1 << 20));
}

// GPTQ and AWQ work on Linear layers (a weight that multiplies its input's
// last axis); other layers a setting sends to them are rounded to nearest.
void CompileSession::plan_weight_algorithms() {
  std::map<WeightAlgorithm, std::vector<std::string>> rounded;
  for (auto& plan : prepared_.plans) {
    const WeightAlgorithm algorithm = plan.weights.algorithm;
    if (algorithm == WeightAlgorithm::Rtn || gptq_applies(plan.layer)) continue;
    plan.weights.algorithm = WeightAlgorithm::Rtn;
    if (plan.quantize && plan.weights.enabled)
      rounded[algorithm].push_back(plan.layer.name + " (" + plan.layer.type + ")");
  }
  for (const auto& [algorithm, layers] : rounded)
    add_note(std::string("weights.algorithm ") + to_string(algorithm) + " works on Linear layers; " +
             std::to_string(layers.size()) + " other layer(s) are rounded to nearest: " + join(layers));
}

// Before any work: a gptq.blocks glob that names nothing is a ConfigError here.
void CompileSession::plan_gptq_steps() {
  std::vector<std::string> names;
  for (const auto& plan : prepared_.plans)
    if (prepared_.quantizing && plan.quantize && plan.weights.enabled &&
        plan.weights.algorithm == WeightAlgorithm::Gptq)
      names.push_back(plan.layer.name);
  if (names.empty()) return;
  prepared_.gptq_steps =
      plan_solve_steps(names, prepared_.model->layers(), config_.quantization_settings->weights.gptq.blocks, "gptq");
  if (!prepared_.gptq_steps.note.empty()) add_note(prepared_.gptq_steps.note);
}

// One observer per quantized layer input. onnxruntime and OpenVINO run a
// residual add in int8 when both operands and the sum are quantized: the
// outputs of the layers that feed adds get an observer too.
void CompileSession::plan_activation_points() {
  PreparedCompile& p = prepared_;
  p.point_of.assign(p.plans.size(), -1);
  p.output_point_of.assign(p.plans.size(), -1);
  const Target target = config_.deployment_settings ? config_.deployment_settings->target : Target::None;
  std::vector<std::string> feeding_adds;
  if (p.quantizing && (target == Target::OnnxRuntime || target == Target::OpenVino))
    feeding_adds = layers_feeding_adds(p.model->module(), config_.model.method);
  for (size_t i = 0; i < p.plans.size(); ++i) {
    if (!p.quantizing || !p.plans[i].quantize || !p.plans[i].activations.enabled) continue;
    p.point_of[i] = static_cast<int>(p.points.size());
    p.points.push_back({p.plans[i].layer.name, p.plans[i].activations});
    if (std::find(feeding_adds.begin(), feeding_adds.end(), p.plans[i].layer.name) == feeding_adds.end()) continue;
    p.output_point_of[i] = static_cast<int>(p.points.size());
    p.points.push_back({p.plans[i].layer.name, p.plans[i].activations, true});
  }
}

const LayerPlan& CompileSession::plan_of(const std::string& layer) const {
  const auto& plans = prepared_.plans;
  const auto found =
      std::find_if(plans.begin(), plans.end(), [&](const LayerPlan& p) { return p.layer.name == layer; });
  if (found == plans.end()) throw Error("no plan for layer '" + layer + "'");
  return *found;
}

torch::jit::Module& CompileSession::reference_model() { return dense_ ? *dense_ : prepared_.model->module(); }

at::Tensor CompileSession::float_weight(const std::string& layer) const {
  return prepared_.model->submodule(layer).attr("weight").toTensor().detach();
}

void CompileSession::keep_bias_in_int32(LayerResult& l) const {
  const auto module = prepared_.model->submodule(l.plan.layer.name);
  const c10::IValue bias = module.hasattr("bias") ? module.attr("bias") : c10::IValue();
  if (!l.weight || !l.input || !bias.isTensor()) return;
  const double calibrated = l.input->qparams.scale.item<double>();
  if (!make_room_for_int32_bias(*l.input, l.input_range, l.plan.activations.symmetric, bias.toTensor(), *l.weight))
    return;
  std::ostringstream out;  // the default floating-point format: 5.47e-12, not 0.000000
  out << "layer '" << l.plan.layer.name << "': its input's calibrated range [" << l.input->lo << ", " << l.input->hi
      << "] is so narrow that its bias would overflow int32 in integer kernels; input scale raised from " << calibrated
      << " to " << l.input->qparams.scale.item<double>();
  log::warn(out.str());
}

ShardSource CompileSession::calibration_source() const {
  const PreparedCompile& p = prepared_;
  return shard_of(p.data, *config_.calibration_inputs, p.transform, rt_, p.placement.device);
}

// The held-out samples of this rank (evaluation_inputs), which must hold the
// inputs the calibration samples do.
ShardSource CompileSession::evaluation_source() {
  PreparedCompile& p = prepared_;
  const auto& ev = *config_.evaluation_inputs;
  const DatasetInfo info = inspect_dataset(ev.files, ev.groups, ev.max_samples);
  if (!config_.calibration_inputs) {  // nothing bound the data to the method yet
    p.data = info;
    if (!callbacks_.forward) p.binding = p.model->bind(info, config_.forward.kwargs);
  }
  if (info.kind != p.data.kind || info.input_names != p.data.input_names)
    throw DataError("evaluation_inputs: the files hold inputs (" + join(info.input_names) +
                    ") other than the calibration inputs (" + join(p.data.input_names) + ")");
  const auto eval_transform =
      callbacks_.data_transform ? callbacks_.data_transform : make_transform(config_.data_transform, info);
  return shard_of(info, ev, eval_transform, rt_, p.placement.device);
}

// ---- calibrate and quantize ----------------------------------------------

// Untrained weights (is_model_pretrained: false) make activations whose tails
// say nothing of the trained model's: clipping them (percentile, entropy, mse)
// would fit noise, so every range is the observed minimum and maximum.
void CompileSession::observe_full_ranges(std::vector<LayerPlan>& plans) {
  size_t changed = 0;
  for (auto& plan : plans)
    if (plan.quantize && plan.activations.enabled && plan.activations.observer != Observer::MinMax) {
      plan.activations.observer = Observer::MinMax;
      ++changed;
    }
  if (changed)
    add_note("is_model_pretrained: false: " + std::to_string(changed) +
             " layer(s) asked for a clipping observer; "
             "their activation ranges are the observed min/max instead (clipping needs trained activations)");
}

void CompileSession::add_note(const std::string& note) {
  log::info("note: " + note);
  result_.notes.push_back(note);
}

void CompileSession::calibrate() {
  const PreparedCompile& p = prepared_;
  if (p.points.empty()) return;
  const ForwardFn run = [this](torch::jit::Module& m, const Batch& b) { return run_mixed(m, b); };
  CalibrationStatistics stats =
      qforge::calibrate(p.model->module(), config_.model.method, p.points, run, calibration_source(), *p.comm, timer_);
  observers_ = std::move(stats.observers);
}

void refuse_quantizing_nothing(const std::vector<LayerPlan>& plans) {
  if (std::any_of(plans.begin(), plans.end(), [](const LayerPlan& p) { return p.quantize; })) return;
  if (!plans.empty() && std::all_of(plans.begin(), plans.end(), [](const LayerPlan& p) { return p.kept_by_choice; }))
    return;  // every layer skipped on purpose
  std::string why;
  size_t listed = 0;
  for (const auto& plan : plans) {
    if (plan.kept_by_choice) continue;
    if (listed++ < 6) why += "\n  layer '" + plan.layer.name + "': " + plan.reason;
  }
  if (listed > 6) why += "\n  and " + std::to_string(listed - 6) + " more";
  throw ConfigError(plans.empty()
                        ? std::string("quantization_settings: the model has no quantizable layer (Linear, Conv, "
                                      "Embedding): there is nothing to quantize")
                        : "quantization_settings: no layer would be quantized, and the compile would write "
                          "a floating-point model:" +
                              why +
                              "\nfix: a group_size that divides the layers' inputs (or weights.granularity: "
                              "channel), fullgraph: true to see why a layer is not reached, or skip the "
                              "layers on purpose in layer_quantization_settings");
}

void keep_unreached_layers_float(const ExperimentConfig& config, const std::vector<int>& point_of,
                                 const std::function<bool(int point)>& reached, std::vector<LayerPlan>& plans) {
  for (size_t i = 0; i < plans.size(); ++i) {
    if (point_of[i] < 0 || reached(point_of[i])) continue;
    if (config.fullgraph)
      throw ModelError("layer '" + plans[i].layer.name +
                       "': no input values were observed on the calibration data "
                       "(the method does not run it as a layer: its weight feeds fused or functional code, or a "
                       "branch the data never takes); set fullgraph: false to keep it in floating point, or skip it "
                       "in layer_quantization_settings");
    plans[i].quantize = false;
    plans[i].reason = "not reached on the calibration data (fullgraph: false)";
  }
}

void CompileSession::quantize() {
  PreparedCompile& p = prepared_;
  timer_.run("quantize", [&] {
    if (!p.points.empty())
      keep_unreached_layers_float(
          config_, p.point_of, [&](int point) { return observed_anything(observers_[point]); }, prepared_.plans);
    if (p.quantizing) {
      refuse_quantizing_nothing(p.plans);
      for (const auto& plan : p.plans)  // the layers a setting could not apply to
        if (!plan.quantize && !plan.kept_by_choice)
          log::warn("layer '" + plan.layer.name + "' stays in floating point: " + plan.reason);
    }
    for (size_t i = 0; i < p.plans.size(); ++i) {
      LayerResult l;
      l.plan = p.plans[i];
      l.quantized = p.quantizing && p.plans[i].quantize;
      l.reason = p.plans[i].reason;
      if (l.quantized && l.plan.weights.enabled) {
        const auto weight = float_weight(l.plan.layer.name);
        l.weight = observe_weight(weight, l.plan.weights);
        l.weight_range = quant_range(l.plan.weights.bits, l.plan.weights.is_signed);
        l.weight_sqnr_db = sqnr_db(weight, fake_quantize_weight(weight, *l.weight, l.plan.weights));
        l.weight_elements = weight.numel();
      }
      if (l.quantized && p.point_of[i] >= 0) {
        l.input = calibrated_range(p.points[p.point_of[i]], observers_[p.point_of[i]]);
        l.input_histogram = display_histogram(observers_[p.point_of[i]], l.plan.activations.symmetric);
        l.input_range = quant_range(l.plan.activations.bits, l.plan.activations.is_signed);
        keep_bias_in_int32(l);
      }
      if (l.quantized && p.output_point_of[i] >= 0) {
        l.output = calibrated_range(p.points[p.output_point_of[i]], observers_[p.output_point_of[i]]);
        l.output_range = quant_range(l.plan.activations.bits, l.plan.activations.is_signed);
      }
      if (auto s = input_scaling_.find(l.plan.layer.name); s != input_scaling_.end()) l.input_scaling = s->second;
      if (auto s = pruned_.find(l.plan.layer.name); s != pruned_.end()) l.pruned = s->second;
      result_.layers.push_back(std::move(l));
    }
  });
  solve_gptq_layers();
}

// ---- sensitivity -----------------------------------------------------------

void CompileSession::measure_sensitivity() {
  const PreparedCompile& p = prepared_;
  const auto threshold =
      config_.quantization_settings ? config_.quantization_settings->sensitivity_threshold : std::optional<double>();
  if (!p.quantizing || !(config_.compile_options.sensitivity || threshold)) return;
  if (!config_.is_model_pretrained) {  // the error of untrained layers says nothing of the trained model's
    add_note(
        std::string("is_model_pretrained: false: per-layer sensitivity not measured") +
        (threshold ? ", sensitivity_threshold not applied (every layer planned for quantization is quantized)" : ""));
    return;
  }
  std::vector<size_t> measured;  // indices into result_.layers
  std::vector<LayerFakeQuant> candidates;
  for (size_t i = 0; i < result_.layers.size(); ++i)
    if (result_.layers[i].quantized) {
      measured.push_back(i);
      candidates.push_back(fake_quant_of(result_.layers[i]));
    }
  SensitivityWork work;
  timer_.run(
      "sensitivity",
      [&] {
        const auto& cal = *config_.calibration_inputs;
        const int64_t rows = std::min(config_.compile_options.sensitivity_samples, p.data.total_rows());
        const auto batches = read_all(p.data, {0, rows}, cal.batch_size, p.transform);  // the same rows on every rank
        log::info("sensitivity: " + std::to_string(candidates.size()) + " layers on " + std::to_string(rows) +
                  " calibration rows, split over " + std::to_string(rt_.size()) + " rank(s)");
        const ForwardFn run = [this](torch::jit::Module& m, const Batch& b) { return this->run(m, b); };
        work = qforge::measure_sensitivity(p.model->module(), config_.model.method, candidates, batches, run,
                                           rt_.rank(), rt_.size());
      },
      [&] {
        const auto errors = gather_sensitivity(work, candidates.size(), *p.comm);
        for (size_t k = 0; k < measured.size(); ++k) {
          auto& l = result_.layers[measured[k]];
          l.sensitivity = errors[k];
          if (threshold && errors[k] > *threshold) {
            l.quantized = false;
            l.reason = "sensitivity " + std::to_string(errors[k]) + " above sensitivity_threshold " +
                       std::to_string(*threshold);
          }
        }
      });
}

// ---- fine-tune -------------------------------------------------------------

bool CompileSession::fine_tune() {
  PreparedCompile& p = prepared_;
  const auto& tune = config_.compile_options.fine_tune;
  if (!p.quantizing || !tune.enabled) return true;
  FineTuneOptions options;
  std::vector<FineTuneTarget>& targets = options.targets;
  timer_.run("fine-tune setup", [&] {
    for (auto& l : result_.layers) {
      if (!l.quantized) continue;
      const bool wanted =
          tune.targets.empty() || std::any_of(tune.targets.begin(), tune.targets.end(), [&](const std::string& t) {
            return t == l.plan.layer.type || layer_matches(t, l.plan.layer.name);
          });
      if (wanted && l.weight) {
        targets.push_back({fake_quant_of(l), l.plan.weights,
                           l.solved_weight.defined() ? l.solved_weight : float_weight(l.plan.layer.name),
                           l.pruned ? l.pruned->mask : at::Tensor()});
        l.fine_tuned = true;
      } else {
        options.others.push_back(fake_quant_of(l));
      }
    }
    if (targets.empty())
      throw ConfigError("compile_options.fine_tune.targets: no quantized layer with quantized weights matches " +
                        (tune.targets.empty() ? std::string("(all)") : join(tune.targets)));
    log::info(std::string("fine-tune: ") + to_string(tune.method) + " on " + std::to_string(targets.size()) +
              " layers, rank " + std::to_string(tune.lora_rank) + ", " + std::to_string(tune.steps) + " steps of " +
              std::to_string(tune.batch_size) + " rows over " + std::to_string(rt_.size()) + " rank(s)");
  });
  options.method = config_.model.method;
  options.settings = tune;
  // The teacher's outputs are kept only where the same rows give the same
  // inputs: a C++ data_transform or forward callback may draw at random.
  if (callbacks_.data_transform || callbacks_.forward) options.settings.teacher_cache_mb = 0;
  // A forward callback may do anything on the host (draw at random, read a
  // value back): a graph would freeze it, so its steps run eagerly.
  if (callbacks_.forward) options.settings.cuda_graphs = false;
  options.seed = config_.seed;
  options.data = p.data;
  options.reading = reader_options(*config_.calibration_inputs, p.transform, p.placement.device);
  options.run = [this](torch::jit::Module& m, const Batch& b) { return this->run_mixed(m, b); };
  options.checkpoints = {config_.out_dir + "/checkpoints/fine_tune.pt", config_.compile_options.checkpoint_every,
                         tune.resume, tune.stop_after_steps};
  std::vector<FineTuneEvaluation> evaluations;
  FineTuneHooks hooks;
  if (tune.eval_every > 0)
    hooks.evaluate = [&](torch::jit::Module& student, int64_t step) {
      EvaluationSums sums;
      const ForwardFn run = [this](torch::jit::Module& m, const Batch& b) { return this->run(m, b); };
      rt_.collective_phase("evaluate at step " + std::to_string(step),
                           [&] { sums = evaluate_shard(reference_model(), student, run, evaluation_source()); });
      evaluations.push_back({step, reduce_evaluation(sums, *p.comm)});
      return evaluations.back().result;
    };
  hooks.progress = callbacks_.fine_tune_progress;
  if (!hooks.progress)
    hooks.progress = [this, log_every = tune.log_every](const FineTuneProgress& progress) {
      if (rt_.is_root()) log_progress(progress, log_every);
    };
  const CollectiveTraffic traffic = collective_traffic();
  if (dense_) options.teacher = &*dense_;  // pruned: the dense model teaches
  const FineTuneReport tuned = qforge::fine_tune(p.model->module(), options, p.comm.get(), rt_, hooks);
  timer_.record("fine-tune", tuned.seconds, traffic);
  if (!tuned.finished) {  // stop_after_steps or a signal: the checkpoint is the only output of this run
    result_.stopped = true;
    result_.stop_signal = tuned.stop_signal;
    return false;
  }
  // qa_lora: the merged weights are on their (learned) grid, so the assembly
  // quantizes them to themselves. lora: they are float, and get the
  // round-to-nearest quantization of their own range.
  base_ = clone_module(p.model->module());
  for (const auto& [layer, weight] : tuned.merged.weights)
    submodule(base_, layer, p.model->path()).setattr("weight", weight);
  for (auto& l : result_.layers) {
    const std::string& name = l.plan.layer.name;
    const MergedAdapters& merged = tuned.merged;
    if (auto s = merged.weight_scales.find(name); s != merged.weight_scales.end()) l.weight->qparams.scale = s->second;
    if (auto s = merged.input_scales.find(name); s != merged.input_scales.end()) l.input->qparams.scale = s->second;
    if (tune.method == FineTuneMethod::Lora && merged.weights.count(name))
      l.weight = observe_weight(merged.weights.at(name), l.plan.weights);
    if (merged.weights.count(name)) l.solved_weight = at::Tensor();  // the merged weight is in base_ now
  }
  FineTuneSummary summary;
  summary.method = to_string(tune.method);
  summary.loss = tuned.loss;
  summary.evaluations = evaluations;
  summary.learned_ranges = static_cast<int64_t>(tuned.merged.weight_scales.size() + tuned.merged.input_scales.size());
  summary.seconds = tuned.seconds;
  summary.samples = tuned.samples;
  summary.step_seconds = tuned.step_seconds;
  summary.teacher_outputs_reused = tuned.teacher_outputs_reused;
  summary.graph_replays = tuned.graph_replays;
  for (const auto& t : targets) summary.layers.push_back(t.quant.layer);
  result_.fine_tune = summary;
  return true;
}

// ---- assemble, evaluate, export, write --------------------------------------

namespace {

// Layers that share a weight store one tensor in the compiled model, the one
// on the grid: a tied layer takes its owner's, and two quantized layers whose
// rounded weights came out equal (one table, one setting) keep one of them.
void tie_stored_weights(torch::jit::Module& model, const std::vector<LayerResult>& layers, const std::string& where) {
  std::map<std::string, const LayerResult*> by_name;
  for (const auto& l : layers) by_name[l.plan.layer.name] = &l;
  for (const auto& l : layers) {
    const auto owner = by_name.find(l.plan.layer.shares_weight_with);
    if (owner == by_name.end() || !owner->second->quantized) continue;
    auto layer = submodule(model, l.plan.layer.name, where);
    const auto shared = submodule(model, owner->first, where).attr("weight").toTensor();
    if (l.plan.tied || (l.quantized && layer.attr("weight").toTensor().equal(shared))) layer.setattr("weight", shared);
  }
}

}  // namespace

void CompileSession::assemble() {
  const PreparedCompile& p = prepared_;
  const std::string& method = config_.model.method;
  timer_.run("assemble", [&] {
    std::vector<LayerFakeQuant> quantized;
    std::set<std::string> counted;  // a tied weight is stored once
    const auto float_element = static_cast<int64_t>(c10::elementSize(module_float_dtype(base_)));
    result_.deployed_bytes = result_.float_bytes;
    if (result_.structured)  // the channels structured pruning removed are not deployed
      result_.deployed_bytes -= (result_.structured->dense_parameters - result_.structured->parameters) * float_element;
    for (const auto& l : result_.layers) {
      if (!l.quantized) continue;
      quantized.push_back(fake_quant_of(l));
      counted.insert(l.plan.layer.name);
      if (l.weight && !counted.count(l.plan.layer.shares_weight_with))
        result_.deployed_bytes += deployed_weight_bytes(l) - l.weight_elements * float_element;
    }
    result_.model = quantized.empty() ? clone_module(base_) : with_fake_quantization(base_, method, quantized);
    const Target target = config_.deployment_settings ? config_.deployment_settings->target : Target::None;
    if (!quantized.empty() &&
        (target == Target::TensorRT || target == Target::OnnxRuntime || target == Target::OpenVino)) {
      const int adds = quantize_residual_inputs(result_.model, method);
      if (adds) log::info(std::to_string(adds) + " residual add(s) read their shortcut through its quantizer");
    }
    // Store weights already on their grid: the file holds exactly the deployed values.
    for (const auto& l : result_.layers) {
      if (!l.quantized || !l.weight) continue;
      auto layer = submodule(result_.model, l.plan.layer.name, p.model->path());
      const auto weight = layer.attr("weight").toTensor();
      layer.setattr("weight", fake_quantize_weight(weight.detach(), *l.weight, l.plan.weights)
                                  .to(weight.scalar_type())
                                  .set_requires_grad(weight.requires_grad()));
    }
    tie_stored_weights(result_.model, result_.layers, p.model->path());
  });
}

void CompileSession::evaluate() {
  if (config_.evaluation_inputs && !config_.disable) {
    const ForwardFn run = [this](torch::jit::Module& m, const Batch& b) { return this->run(m, b); };
    EvaluationSums sums;
    timer_.run(
        "evaluate", [&] { sums = evaluate_shard(reference_model(), result_.model, run, evaluation_source()); },
        [&] { result_.evaluation = reduce_evaluation(sums, *prepared_.comm); });
  }
  // Deployable anywhere: the compiled model leaves on the CPU, and runs on the
  // device of its inputs (Module.to / map_location move what a trace fixed).
  move_module(result_.model, c10::Device(c10::kCPU));
  make_device_portable(result_.model, config_.model.method);
}

void CompileSession::export_onnx() {
  if (!config_.deployment_settings || !config_.deployment_settings->writes_onnx() || config_.disable) return;
  const PreparedCompile& p = prepared_;
  timer_.run(
      "export",
      [&] {
        if (!rt_.is_root()) return;
        std::vector<std::string> layer_names;
        for (const auto& l : result_.layers) layer_names.push_back(l.plan.layer.name);
        const CallBinding binding = callbacks_.forward ? p.model->bind(p.data, config_.forward.kwargs) : p.binding;
        const OnnxExportOptions options = onnx_options(config_, layer_names);
        const OnnxModel onnx = export_for_experiment(result_.model, config_, binding, options, p.transform);
        // The compiled model now lives on the CPU: run it there, without the device copy.
        const ForwardFn forward = [this](torch::jit::Module& m, const Batch& b) { return this->forward(m, b); };
        verify_export(onnx, result_.model, result_.model, forward, config_, binding, options, p.transform,
                      result_.onnx);
        if (result_.onnx.not_verified.empty())
          log::info("ONNX file checked against model.qforge.pt on fresh inputs in " + result_.onnx.runtime + ": " +
                    join(result_.onnx.verified_on, "; "));
        else
          log::warn("ONNX file not checked on fresh inputs: " + result_.onnx.not_verified);
        if (!result_.onnx.optimized_note.empty()) log::warn("ONNX file: " + result_.onnx.optimized_note);
        result_.onnx.bytes = onnx.bytes;
        result_.onnx.opset = onnx.opset;
        result_.onnx.quantized_weights = onnx.quantized_weights;
        result_.onnx.quantized_activations = onnx.quantized_activations;
        result_.onnx.notes = onnx.notes;
        for (const auto& note : onnx.notes) log::warn("ONNX export: " + note);
        if (config_.evaluation_inputs && config_.deployment_settings->evaluate_onnx) {
          evaluate_onnx(onnx.bytes, result_.model, forward, config_, p.transform, result_.onnx);
          if (result_.onnx.evaluation)
            log::info("ONNX in " + result_.onnx.runtime + ": " + onnx_evaluation_text(*result_.onnx.evaluation));
          else
            log::warn("ONNX file not evaluated: " + result_.onnx.not_evaluated);
        }
      },
      {}, Runtime::PhaseWork::RootOnly);
}

void CompileSession::write() {
  result_.phases = timer_.gather(*prepared_.comm);
  rt_.collective_phase(
      "write",
      [&] {
        if (!rt_.is_root()) return;
        write_artifacts(result_, config_, rt_.hosts());
        if (result_.fine_tune)
          std::filesystem::remove(config_.out_dir + "/checkpoints/fine_tune.pt");  // finished: nothing to resume
        log::info(summary_text(result_, rt_.hosts()));
        log::info("artifacts in " + config_.out_dir + ": model.qforge.pt" +
                  (result_.onnx.written ? ", model.qforge.onnx" : "") +
                  ", quant_params.json, report.json, report.html, summary.txt, config.yaml");
      },
      Runtime::PhaseWork::RootOnly);
}

// ---- the whole compile -------------------------------------------------------

CompileResult compile(const ExperimentConfig& config, const CompileCallbacks& callbacks, torch::jit::Module* input) {
  if (config.is_dry_run) {
    CompileResult result;
    result.graph_name = config.effective_graph_name();
    result.dry_run = true;
    dry_run(config, callbacks, input);
    return result;
  }
  CompileSession session(config, callbacks, input);
  session.prepare();
  session.prune();
  session.smooth();
  session.calibrate();
  session.quantize();
  session.measure_sensitivity();
  if (!session.fine_tune()) return session.take_result();  // stopped: its checkpoint is the output
  session.assemble();
  session.evaluate();
  session.export_onnx();
  session.write();
  return session.take_result();
}

}  // namespace qforge
