// qforge::compile: load and prepare the model, calibrate across ranks,
// choose quantization parameters, measure sensitivity, assemble the compiled
// model, evaluate it, and write the artifacts on rank 0. Every step that can
// fail on some ranks runs as a collective phase, so a failure is reported
// once and no rank is left waiting.
#include "qforge/compile.h"

#include <algorithm>
#include <tuple>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include <torch/csrc/jit/runtime/graph_executor.h>

#include "compile/artifacts.h"
#include "compile/batches.h"
#include "compile/calibration.h"
#include "compile/evaluation.h"
#include "compile/onnx_stage.h"
#include "compile/phase_timer.h"
#include "compile/sensitivity.h"
#include "finetune/qa_lora.h"
#include "runtime/device.h"
#include "qforge/errors.h"
#include "qforge/fake_quant_graph.h"
#include "qforge/logger.h"
#include "qforge/model.h"
#include "qforge/runtime.h"
#include "util/text.h"

namespace qforge {
namespace {

// How a sample set's rows are read: its batching, prefetch and finiteness
// check, the transform, and the rank's GPU they are copied to (if any).
SampleReaderOptions reader_options(const CalibrationSettings& settings, const DataTransformFn& transform,
                                   const c10::Device& device) {
  return {settings.batch_size, settings.prefetch, settings.check_finite, transform, device.is_cuda() ? device.index() : -1};
}

// A sample set's shard for this rank, in whole batches of the one-rank
// batching, read straight onto the rank's GPU when it has one.
ShardSource shard_of(const DatasetInfo& info, const CalibrationSettings& settings, const DataTransformFn& transform,
                     const Runtime& rt, const c10::Device& device) {
  return {info, shard_whole_batches(info.group_rows(), settings.batch_size, rt.rank(), rt.size()),
          reader_options(settings, transform, device)};
}

// TorchScript's optimizing executor profiles the first runs of a graph, then
// rewrites it and, on GPUs, compiles fused kernels at run time: seconds of
// work inside calibration and the first fine-tuning steps, for little gain on
// graphs of convolutions, matmuls and fused fake-quant ops. qforge runs the
// graphs as written (the speed of eager PyTorch from the first batch) unless
// QFORGE_TORCHSCRIPT_OPTIMIZE=1.
bool torchscript_optimize() {
  const char* value = std::getenv("QFORGE_TORCHSCRIPT_OPTIMIZE");
  return value && std::string(value) == "1";
}

LayerFakeQuant fake_quant_of(const LayerResult& l) {
  LayerFakeQuant f;
  f.layer = l.plan.layer.name;
  f.weight = l.weight;
  f.weight_range = l.weight_range;
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

}  // namespace

CompileResult compile(const ExperimentConfig& config, const CompileCallbacks& callbacks, torch::jit::Module* input) {
  CompileResult result;
  result.graph_name = config.effective_graph_name();
  result.disabled = config.disable;
  if (config.is_dry_run) {
    dry_run(config, callbacks);
    result.dry_run = true;
    return result;
  }
  Runtime& rt = Runtime::get();
  torch::NoGradGuard no_grad;
  const torch::jit::GraphOptimizerEnabledGuard executor(torchscript_optimize());  // restored on return
  // Ranks sharing a host share its cores: without this each would start one
  // thread per core and oversubscribe them (an explicit OMP_NUM_THREADS wins).
  if (rt.local_size() > 1 && !std::getenv("OMP_NUM_THREADS"))
    at::set_num_threads(std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / rt.local_size()));
  PhaseTimer timer(rt);
  ComputePlacement placement;
  const c10::Device& device = placement.device;
  std::unique_ptr<Communicator> comm;
  const std::string& method = config.model.method;

  std::optional<Model> model;
  DatasetInfo data;
  CallBinding binding;
  DataTransformFn transform;
  std::vector<LayerPlan> plans;
  const bool quantizing = config.quantization_settings.has_value() && !config.disable;

  timer.run("load", [&] {
    placement = select_device(config, rt);
    model = input ? Model::wrap(config.discard_input_model ? *input : input->clone(), "the input module", method)
                  : Model::load(config.model.path, method);
    move_module(model->module(), device);
    if (!config.skip_eval_set_mode) model->module().eval();
    result.float_bytes = model->parameter_bytes();
    if (config.disable) return;
    if (config.calibration_inputs) {
      const auto& cal = *config.calibration_inputs;
      data = inspect_dataset(cal.files, cal.groups, cal.max_samples);
      if (!callbacks.forward) binding = model->bind(data, config.forward.kwargs);
      transform = callbacks.data_transform ? callbacks.data_transform : make_transform(config.data_transform, data);
    }
    if (!model->module().is_training()) result.folded_batch_norms = model->fold_conv_batch_norm();
    plans = plan_layers(model->layers(), config);
    const auto reached = layers_read_by(model->module(), method);
    for (auto& p : plans) {
      if (!p.quantize || std::find(reached.begin(), reached.end(), p.layer.name) != reached.end()) continue;
      if (config.fullgraph)
        throw ModelError("layer '" + p.layer.name + "': " + method + " does not read its weight in a way qforge can "
                         "rewrite (or does not use the layer); skip it in layer_quantization_settings or set fullgraph: false");
      p.quantize = false;
      p.reason = method + " does not read its weight directly (fullgraph: false)";
    }
    if (!config.compile_options.ptq)
      for (const auto& p : plans)
        if (p.quantize && p.activations.enabled)
          throw ConfigError("compile_options.ptq is false but layer '" + p.layer.name +
                            "' quantizes activations, whose ranges only calibration measures; enable ptq or set "
                            "quantization_settings.activations.enabled: false");
  });

  // One communicator per job: NCCL between GPUs, MPI between CPU ranks (and
  // between ranks sharing a GPU, which NCCL refuses).
  comm = device.is_cuda() && !placement.gpu_shared ? make_nccl_communicator(device.index()) : make_mpi_communicator();
  if (device.is_cuda())
    log::info("rank " + std::to_string(rt.rank()) + " on " + rt.host() + " computes on " + device.str() +
              ", collectives over " + comm->backend() +
              (config.autocast == Autocast::Off ? "" : std::string(", autocast ") + to_string(config.autocast)));
  const Runner forward = callbacks.forward ? Runner(callbacks.forward)
                                           : Runner([&](torch::jit::Module& m, const Batch& b) {
                                               return run_module(m, method, binding, b, model->path());
                                             });
  // Batches reach the method on the model's device (the seed's forward_fn contract).
  const Runner run = [&](torch::jit::Module& m, const Batch& b) { return forward(m, to_device(b, device)); };
  // Calibration and fine-tuning may run in mixed precision; evaluation measures the model as deployed.
  const Runner run_mixed = [&](torch::jit::Module& m, const Batch& b) {
    AutocastScope autocast(config.autocast, device);
    return run(m, b);
  };

  // This rank's shard of the held-out samples (evaluation_inputs), which must
  // hold the inputs the calibration samples do.
  const auto evaluation_source = [&]() -> ShardSource {
    const auto& ev = *config.evaluation_inputs;
    const DatasetInfo info = inspect_dataset(ev.files, ev.groups, ev.max_samples);
    if (!config.calibration_inputs) {  // nothing bound the data to the method yet
      data = info;
      if (!callbacks.forward) binding = model->bind(info, config.forward.kwargs);
    }
    if (info.kind != data.kind || info.input_names != data.input_names)
      throw DataError("evaluation_inputs: the files hold inputs (" + join(info.input_names) +
                      ") other than the calibration inputs (" + join(data.input_names) + ")");
    const auto eval_transform =
        callbacks.data_transform ? callbacks.data_transform : make_transform(config.data_transform, info);
    return shard_of(info, ev, eval_transform, rt, device);
  };

  // Activation ranges: one observer per quantized layer input.
  std::vector<CalibrationPoint> points;
  std::vector<int> point_of(plans.size(), -1), output_point_of(plans.size(), -1);
  // onnxruntime and OpenVINO run a residual add in int8 when both operands and the
  // sum are quantized: the outputs of the layers that feed adds get a quantizer too.
  const Target target = config.deployment_settings ? config.deployment_settings->target : Target::None;
  std::vector<std::string> feeding_adds;
  if (quantizing && (target == Target::OnnxRuntime || target == Target::OpenVino))
    feeding_adds = layers_feeding_adds(model->module(), method);
  for (size_t i = 0; i < plans.size(); ++i) {
    if (!quantizing || !plans[i].quantize || !plans[i].activations.enabled) continue;
    point_of[i] = static_cast<int>(points.size());
    points.push_back({plans[i].layer.name, plans[i].activations});
    if (std::find(feeding_adds.begin(), feeding_adds.end(), plans[i].layer.name) == feeding_adds.end()) continue;
    output_point_of[i] = static_cast<int>(points.size());
    points.push_back({plans[i].layer.name, plans[i].activations, true});
  }
  std::vector<ActivationObserver> observers;
  if (!points.empty())
    observers = calibrate(model->module(), method, points, run_mixed,
                          shard_of(data, *config.calibration_inputs, transform, rt, device), *comm, timer);

  timer.run("quantize", [&] {
    for (size_t i = 0; i < plans.size(); ++i) {
      LayerResult l;
      l.plan = plans[i];
      l.quantized = quantizing && plans[i].quantize;
      l.reason = plans[i].reason;
      if (l.quantized && l.plan.weights.enabled) {
        const auto weight = model->submodule(l.plan.layer.name).attr("weight").toTensor().detach();
        l.weight = observe_weight(weight, l.plan.weights);
        l.weight_range = quant_range(l.plan.weights.bits, l.plan.weights.is_signed);
        l.weight_sqnr_db = sqnr_db(weight, fake_quantize_weight(weight, *l.weight, l.plan.weights));
        l.weight_elements = weight.numel();
      }
      if (l.quantized && point_of[i] >= 0) {
        l.input = calibrated_range(points[point_of[i]], observers[point_of[i]]);
        l.input_histogram = display_histogram(observers[point_of[i]], l.plan.activations.symmetric);
        l.input_range = quant_range(l.plan.activations.bits, l.plan.activations.is_signed);
      }
      if (l.quantized && output_point_of[i] >= 0) {
        l.output = calibrated_range(points[output_point_of[i]], observers[output_point_of[i]]);
        l.output_range = quant_range(l.plan.activations.bits, l.plan.activations.is_signed);
      }
      result.layers.push_back(std::move(l));
    }
  });

  const auto threshold = config.quantization_settings ? config.quantization_settings->sensitivity_threshold
                                                      : std::optional<double>();
  if (quantizing && (config.compile_options.sensitivity || threshold)) {
    std::vector<size_t> measured;  // indices into result.layers
    std::vector<LayerFakeQuant> candidates;
    for (size_t i = 0; i < result.layers.size(); ++i)
      if (result.layers[i].quantized) {
        measured.push_back(i);
        candidates.push_back(fake_quant_of(result.layers[i]));
      }
    SensitivityWork work;
    timer.run(
        "sensitivity",
        [&] {
          const auto& cal = *config.calibration_inputs;
          const int64_t rows = std::min(config.compile_options.sensitivity_samples, data.total_rows());
          const auto batches = read_all(data, {0, rows}, cal.batch_size, transform);  // the same rows on every rank
          log::info("sensitivity: " + std::to_string(candidates.size()) + " layers on " + std::to_string(rows) +
                    " calibration rows, split over " + std::to_string(rt.size()) + " rank(s)");
          work = measure_sensitivity(model->module(), method, candidates, batches, run, rt.rank(), rt.size());
        },
        [&] {
          const auto errors = gather_sensitivity(work, candidates.size(), rt);
          for (size_t k = 0; k < measured.size(); ++k) {
            auto& l = result.layers[measured[k]];
            l.sensitivity = errors[k];
            if (threshold && errors[k] > *threshold) {
              l.quantized = false;
              l.reason = "sensitivity " + std::to_string(errors[k]) + " above sensitivity_threshold " +
                         std::to_string(*threshold);
            }
          }
        });
  }

  // The model the compiled one is assembled from: the float model, or a copy
  // of it holding the fine-tuned weights (the float model stays the reference
  // of the evaluation).
  torch::jit::Module base = model->module();
  const auto& tune = config.compile_options.fine_tune;
  if (quantizing && tune.enabled) {
    std::vector<FineTuneTarget> targets;
    std::vector<LayerFakeQuant> others;
    timer.run("fine-tune setup", [&] {
      for (auto& l : result.layers) {
        if (!l.quantized) continue;
        const bool wanted = tune.targets.empty() ||
                            std::any_of(tune.targets.begin(), tune.targets.end(), [&](const std::string& t) {
                              return t == l.plan.layer.type || layer_matches(t, l.plan.layer.name);
                            });
        if (wanted && l.weight) {
          targets.push_back({fake_quant_of(l), l.plan.weights,
                             model->submodule(l.plan.layer.name).attr("weight").toTensor().detach()});
          l.fine_tuned = true;
        } else {
          others.push_back(fake_quant_of(l));
        }
      }
      if (targets.empty())
        throw ConfigError("compile_options.fine_tune.targets: no quantized layer with quantized weights matches " +
                          (tune.targets.empty() ? std::string("(all)") : join(tune.targets)));
      log::info(std::string("fine-tune: ") + to_string(tune.method) + " on " + std::to_string(targets.size()) + " layers, rank " +
                std::to_string(tune.lora_rank) + ", " + std::to_string(tune.steps) + " steps of " +
                std::to_string(tune.batch_size) + " rows over " + std::to_string(rt.size()) + " rank(s)");
    });
    const CheckpointPlan checkpoints{config.out_dir + "/checkpoints/fine_tune.pt", config.compile_options.checkpoint_every,
                                     tune.resume, tune.stop_after_steps};
    std::vector<FineTuneEvaluation> evaluations;
    FineTuneEvaluator evaluate;
    if (tune.eval_every > 0)
      evaluate = [&](torch::jit::Module& student, int64_t step) {
        EvaluationSums sums;
        rt.collective_phase("evaluate at step " + std::to_string(step),
                            [&] { sums = evaluate_shard(model->module(), student, run, evaluation_source()); });
        evaluations.push_back({step, reduce_evaluation(sums, *comm)});
        log::info("fine-tune step " + std::to_string(step) + ": held-out " + evaluation_text(evaluations.back().result));
      };
    const FineTuneReport tuned = fine_tune(model->module(), method, targets, others, tune, config.seed, data,
                                           reader_options(*config.calibration_inputs, transform, device),
                                           run_mixed, comm.get(), rt, checkpoints, evaluate);
    timer.record("fine-tune", tuned.seconds);
    if (!tuned.finished) {  // stop_after_steps or a signal: the checkpoint is the only output of this run
      result.stopped = true;
      result.stop_signal = tuned.stop_signal;
      return result;
    }
    // qa_lora: the merged weights are on their (learned) grid, so the assembly
    // below quantizes them to themselves. lora: they are float, and get the
    // round-to-nearest quantization of their own range.
    base = model->module().clone();
    for (const auto& [layer, weight] : tuned.merged)
      submodule(base, layer, model->path()).setattr("weight", weight);
    for (auto& l : result.layers) {
      const std::string& name = l.plan.layer.name;
      if (auto s = tuned.weight_scales.find(name); s != tuned.weight_scales.end()) l.weight->qparams.scale = s->second;
      if (auto s = tuned.input_scales.find(name); s != tuned.input_scales.end()) l.input->qparams.scale = s->second;
      if (tune.method == FineTuneMethod::Lora && tuned.merged.count(name))
        l.weight = observe_weight(tuned.merged.at(name), l.plan.weights);
    }
    FineTuneSummary summary;
    summary.method = to_string(tune.method);
    summary.loss = tuned.loss;
    summary.evaluations = evaluations;
    summary.learned_ranges = static_cast<int64_t>(tuned.weight_scales.size() + tuned.input_scales.size());
    summary.seconds = tuned.seconds;
    summary.samples = tuned.samples;
    summary.step_seconds = tuned.step_seconds;
    for (const auto& t : targets) summary.layers.push_back(t.quant.layer);
    result.fine_tune = summary;
  }

  timer.run("assemble", [&] {
    std::vector<LayerFakeQuant> quantized;
    result.deployed_bytes = result.float_bytes;
    for (const auto& l : result.layers) {
      if (!l.quantized) continue;
      quantized.push_back(fake_quant_of(l));
      if (l.weight) result.deployed_bytes += deployed_weight_bytes(l) - l.weight_elements * 4;
    }
    result.model = quantized.empty() ? base.clone() : with_fake_quantization(base, method, quantized);
    if (!quantized.empty() &&
        (target == Target::TensorRT || target == Target::OnnxRuntime || target == Target::OpenVino)) {
      const int adds = quantize_residual_inputs(result.model, method);
      if (adds) log::info(std::to_string(adds) + " residual add(s) read their shortcut through its quantizer");
    }
    // Store weights already on their grid: the file holds exactly the deployed values.
    for (const auto& l : result.layers) {
      if (!l.quantized || !l.weight) continue;
      auto layer = submodule(result.model, l.plan.layer.name, model->path());
      const auto weight = layer.attr("weight").toTensor();
      layer.setattr("weight", fake_quantize_weight(weight.detach(), *l.weight, l.plan.weights)
                                  .to(weight.scalar_type())
                                  .set_requires_grad(weight.requires_grad()));
    }
  });

  if (config.evaluation_inputs && !config.disable) {
    EvaluationSums sums;
    timer.run(
        "evaluate", [&] { sums = evaluate_shard(model->module(), result.model, run, evaluation_source()); },
        [&] { result.evaluation = reduce_evaluation(sums, *comm); });
  }

  // Deployable anywhere: the compiled model leaves on the CPU.
  move_module(result.model, c10::Device(c10::kCPU));
  if (config.deployment_settings && config.deployment_settings->writes_onnx() && !config.disable)
    timer.run("export", [&] {
      if (!rt.is_root()) return;
      std::vector<std::string> layer_names;
      for (const auto& l : result.layers) layer_names.push_back(l.plan.layer.name);
      const CallBinding onnx_binding = callbacks.forward ? model->bind(data, config.forward.kwargs) : binding;
      const OnnxModel onnx =
          export_for_experiment(result.model, config, onnx_binding, onnx_options(config, layer_names), transform);
      result.onnx.bytes = onnx.bytes;
      result.onnx.opset = onnx.opset;
      result.onnx.quantized_weights = onnx.quantized_weights;
      result.onnx.quantized_activations = onnx.quantized_activations;
      result.onnx.notes = onnx.notes;
      for (const auto& note : onnx.notes) log::warn("ONNX export: " + note);
      if (config.evaluation_inputs && config.deployment_settings->evaluate_onnx) {
        // The compiled model now lives on the CPU: run it there, without the device copy.
        evaluate_onnx(onnx.bytes, result.model, forward, config, transform, result.onnx);
        if (result.onnx.evaluation)
          log::info("ONNX in " + result.onnx.runtime + ": " + onnx_evaluation_text(*result.onnx.evaluation));
        else
          log::warn("ONNX file not evaluated: " + result.onnx.not_evaluated);
      }
    });
  result.phases = timer.gather();
  rt.collective_phase("write", [&] {
    if (!rt.is_root()) return;
    write_artifacts(result, config, rt.size());
    if (result.fine_tune) std::filesystem::remove(config.out_dir + "/checkpoints/fine_tune.pt");  // finished: nothing to resume
    log::info(summary_text(result, rt.size()));
    log::info("artifacts in " + config.out_dir + ": model.qforge.pt" + (result.onnx.written ? ", model.qforge.onnx" : "") +
              ", quant_params.json, report.json, report.html, summary.txt, config.yaml");
  });
  return result;
}

}  // namespace qforge
