#include "finetune/qa_lora.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cmath>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "metrics/output_error.h"
#include "metrics/predictions.h"
#include "finetune/checkpoint.h"
#include "runtime/stop_signal.h"
#include "qforge/errors.h"
#include "runtime/logger.h"
#include "quant/observer.h"
#include "data/sample_reader.h"
#include "data/shard.h"

namespace qforge {
namespace {

constexpr int64_t kBucketElements = 1 << 22;  // gradients travel in buckets of at most 16 MiB of float32

// The rows of step `step` that this rank computes, as ranges of the global
// row space (the global batch wraps around the end of the data).
std::vector<RowRange> rows_of_step(int64_t step, int64_t global_batch, int64_t total, int rank, int world) {
  const RowRange part = shard_rows(global_batch, rank, world);
  std::vector<RowRange> out;
  int64_t first = (step * global_batch + part.begin) % total;
  for (int64_t left = part.size(); left > 0;) {
    const int64_t n = std::min(left, total - first);
    out.push_back({first, first + n});
    left -= n;
    first = 0;
  }
  return out;
}

// Every micro-batch this rank computes from `first_step` on, in order, and
// how many each step takes: one reader then prefetches across steps, so the
// next step's rows are read (and copied to the GPU) while this one computes.
struct StepBatches {
  std::vector<BatchSlice> slices;
  std::vector<int64_t> per_step;  // index: step - first_step
};

StepBatches plan_step_batches(const FineTuneSettings& s, int64_t first_step, const DatasetInfo& data, int rank,
                              int world) {
  StepBatches plan;
  const auto group_rows = data.group_rows();
  for (int64_t step = first_step; step < s.steps; ++step) {
    int64_t count = 0;
    for (const RowRange& range : rows_of_step(step, s.batch_size, data.total_rows(), rank, world)) {
      const int64_t chunk = (range.size() + s.accumulation_steps - 1) / s.accumulation_steps;
      for (const auto& slice : plan_batches(range, group_rows, std::max<int64_t>(1, chunk))) {
        plan.slices.push_back(slice);
        ++count;
      }
    }
    plan.per_step.push_back(count);
  }
  return plan;
}

// Sum over the rows of a batch of the per-row distillation loss.
at::Tensor distillation_loss(const c10::IValue& student, const c10::IValue& teacher, Distillation kind, int64_t rows) {
  const auto s = output_tensors(student), t = output_tensors(teacher);
  at::Tensor total = at::zeros({}, at::kFloat);
  for (size_t i = 0; i < s.size(); ++i) {
    at::Tensor per_element;
    if (kind == Distillation::Mse) {
      per_element = (s[i] - t[i].detach()).pow(2);
    } else {  // KL(teacher || student) over the last axis
      const auto teacher_log = at::log_softmax(t[i].detach(), -1);
      per_element = (teacher_log.exp() * (teacher_log - at::log_softmax(s[i], -1))).sum(-1);
    }
    total = total + per_element.reshape({rows, -1}).mean(1).sum();
  }
  return total;
}

// Sum over the rows of the cross-entropy of the labels: one per row of
// [batch, classes] logits, the mean over positions of [batch, positions, classes].
at::Tensor task_loss(const c10::IValue& student, const Batch& batch) {
  const auto logits = prediction_logits(student, batch.rows());
  const auto labels = logits ? class_labels(batch.labels, student.toTensor()) : std::nullopt;
  if (!labels)
    throw DataError(
        "compile_options.fine_tune.task_loss_weight needs labels in the data and [batch, classes] or "
        "[batch, positions, classes] outputs from the model, one class label per prediction (sample " +
        std::to_string(batch.global_begin) + ")");
  const at::Tensor& out = student.toTensor();
  const double positions = out.dim() == 3 ? static_cast<double>(out.size(1)) : 1.0;
  return at::cross_entropy_loss(*logits, *labels, {}, at::Reduction::Sum) / positions;
}

// Dropout over the rank components of every adapter for one step: the masks
// of a step depend only on the seed and the step, so every rank, and a
// resumed run, draws the same ones.
void draw_dropout_masks(std::vector<at::Tensor>& masks, double p, int64_t seed, int64_t step) {
  if (masks.empty()) return;
  at::Generator generator =
      at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(seed) * 1000003u + static_cast<uint64_t>(step));
  torch::NoGradGuard no_grad;
  for (auto& mask : masks) mask.copy_(at::empty(mask.sizes(), at::kFloat).bernoulli_(1.0 - p, generator).div_(1.0 - p));
}

void all_reduce_in_buckets(const std::vector<at::Tensor>& parameters, Communicator& comm) {
  std::vector<at::Tensor> bucket;
  int64_t elements = 0;
  const auto flush = [&] {
    if (bucket.empty()) return;
    std::vector<at::Tensor> flat;
    for (const auto& p : bucket) flat.push_back(p.grad().reshape({-1}));
    at::Tensor joined = at::cat(flat);
    comm.all_reduce(joined);
    int64_t offset = 0;
    for (const auto& p : bucket) {
      p.mutable_grad().copy_(joined.narrow(0, offset, p.numel()).view_as(p));
      offset += p.numel();
    }
    bucket.clear();
    elements = 0;
  };
  for (const auto& p : parameters) {
    if (elements + p.numel() > kBucketElements) flush();
    bucket.push_back(p);
    elements += p.numel();
  }
  flush();
}

}  // namespace

double learning_rate_at(const FineTuneSettings& s, int64_t step) {
  if (step < s.warmup_steps)
    return s.learning_rate * static_cast<double>(step + 1) / static_cast<double>(s.warmup_steps);
  const int64_t decay = std::max<int64_t>(1, s.steps - s.warmup_steps);
  const double progress = static_cast<double>(step - s.warmup_steps) / static_cast<double>(decay);
  return s.learning_rate * 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, progress)));
}

FineTuneReport fine_tune(const torch::jit::Module& model, const std::string& method,
                         const std::vector<FineTuneTarget>& targets, const std::vector<LayerFakeQuant>& others,
                         const FineTuneSettings& settings, int64_t seed, const DatasetInfo& data,
                         const SampleReaderOptions& reading, const ForwardFn& run, Communicator* comm,
                         const Runtime& runtime, const CheckpointPlan& checkpoints, const FineTuneEvaluator& evaluate) {
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->size() : 1;
  const bool through_quantizer = settings.method == FineTuneMethod::QaLora;
  // The same adapters on every rank: A random (seeded), B zero, so training
  // starts from the calibrated model exactly.
  torch::manual_seed(static_cast<uint64_t>(seed));
  std::vector<LayerFakeQuant> layers = through_quantizer ? others : std::vector<LayerFakeQuant>{};
  std::vector<at::Tensor> parameters, masks;
  const double scale = settings.lora_alpha / static_cast<double>(settings.lora_rank);
  // Adapters and learned ranges live on the model's device.
  const c10::Device device = targets.empty() ? c10::Device(c10::kCPU) : targets.front().weight.device();
  const auto on_device = torch::TensorOptions().device(device);
  for (const auto& t : targets) {
    const int64_t outputs = t.weight.size(0), inputs = t.weight.numel() / outputs;
    LoraAdapter adapter;
    adapter.scale = scale;
    // Drawn on the CPU, then placed on the device: the same start on every device.
    adapter.a = (torch::randn({settings.lora_rank, inputs}) / std::sqrt(static_cast<double>(inputs)))
                    .to(device)
                    .requires_grad_();
    adapter.b = torch::zeros({outputs, settings.lora_rank}, on_device).requires_grad_();
    if (settings.lora_dropout > 0) masks.push_back(adapter.mask = torch::ones({settings.lora_rank}, on_device));
    parameters.push_back(adapter.a);
    parameters.push_back(adapter.b);
    LayerFakeQuant layer;  // plain LoRA: the adapters on float weights, nothing quantized
    if (through_quantizer) layer = t.quant;
    layer.layer = t.quant.layer;
    layer.lora = adapter;
    layers.push_back(layer);
  }
  // Learned ranges: one log-multiplier per scale, starting at 0 (the calibrated scale).
  int64_t learned = 0;
  if (settings.learn_ranges)
    for (auto& l : layers) {
      if (l.weight)
        parameters.push_back(l.weight_log_multiplier =
                                 torch::zeros({l.weight->qparams.scale.numel()}, on_device).requires_grad_());
      if (l.input)
        parameters.push_back(l.input_log_multiplier =
                                 torch::zeros({l.input->scale.numel()}, on_device).requires_grad_());
      learned += (l.weight ? 1 : 0) + (l.input ? 1 : 0);
    }
  torch::jit::Module student = with_fake_quantization(model, method, layers);
  for (auto p : student.parameters()) {  // only the adapters (and learned ranges) learn
    const bool adapter =
        std::any_of(parameters.begin(), parameters.end(), [&](const at::Tensor& a) { return a.is_same(p); });
    if (!adapter && p.requires_grad()) p.detach_();
  }
  torch::jit::Module teacher = model;
  torch::optim::AdamW optimizer(parameters,
                                torch::optim::AdamWOptions(settings.learning_rate).weight_decay(settings.weight_decay));

  FineTuneReport report;
  // What a checkpoint must match to be resumed here.
  std::string fingerprint =
      "steps=" + std::to_string(settings.steps) + " batch=" + std::to_string(settings.batch_size) +
      " rank=" + std::to_string(settings.lora_rank) + " seed=" + std::to_string(seed) +
      " method=" + std::to_string(static_cast<int>(settings.method)) + " dropout=" + c10::str(settings.lora_dropout) +
      " ranges=" + std::to_string(learned) + " rows=" + std::to_string(data.total_rows()) + " layers=";
  for (const auto& t : targets) fingerprint += t.quant.layer + c10::str(t.weight.sizes()) + ",";
  int64_t first_step = 0;
  runtime.collective_phase("resume", [&] {
    if (checkpoints.path.empty() || !checkpoints.resume || !std::filesystem::exists(checkpoints.path)) return;
    const auto state = load_checkpoint(checkpoints.path, fingerprint, parameters, optimizer);
    first_step = state.step;
    report.loss = state.loss;
    report.resumed_from = state.step;
    log::info("fine-tune: resumed from " + checkpoints.path + " after step " + std::to_string(state.step));
  });
  const auto write_checkpoint = [&](int64_t steps_done) {
    runtime.collective_phase("checkpoint", [&] {
      if (runtime.is_root())
        save_checkpoint(checkpoints.path, fingerprint, {steps_done, report.loss}, parameters, optimizer);
    });
  };
  const double global_rows = static_cast<double>(settings.batch_size);
  const StepBatches batches = plan_step_batches(settings, first_step, data, rank, world);
  SampleReader reader(data, batches.slices, reading);
  const auto start = std::chrono::steady_clock::now();
  // Rank 0 on a terminal draws a progress bar; logs and pipes get plain lines every log_every steps.
  // Under mpirun stdout is a pseudo-terminal whatever mpirun's own output is (often a file): plain lines.
  const bool launched = std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMIX_RANK") || std::getenv("PMI_RANK");
  const bool progress_bar = runtime.is_root() && isatty(fileno(stdout)) && !launched;
  for (int64_t step = first_step; step < settings.steps; ++step) {
    // A stop signal on any rank stops every rank here, at the same step.
    at::Tensor agreed = at::full({1}, stop_signal(), at::kInt);
    if (comm) comm->all_reduce(agreed, {ReduceOp::Max});
    const int signal = agreed.item<int>();
    if (signal != 0 || (checkpoints.stop_after > 0 && step - first_step == checkpoints.stop_after)) {
      if (!checkpoints.path.empty()) write_checkpoint(step);
      report.finished = false;
      report.stop_signal = signal;
      if (progress_bar) std::printf("\n");  // end the bar's line
      log::info("fine-tune: stopped after step " + std::to_string(step) +
                (signal ? " (signal " + std::to_string(signal) + ")" : std::string(" (stop_after_steps)")) +
                (checkpoints.path.empty() ? "" : "; checkpoint " + checkpoints.path + ", run again to resume"));
      return report;
    }
    const auto step_start = std::chrono::steady_clock::now();
    at::Tensor local_loss = torch::zeros({1}, torch::kDouble);
    draw_dropout_masks(masks, settings.lora_dropout, seed, step);
    runtime.collective_phase("fine-tune step " + std::to_string(step + 1), [&] {
      optimizer.zero_grad();
      at::Tensor summed;  // on the device: read once per step, not once per micro-batch
      for (int64_t k = 0; k < batches.per_step[step - first_step]; ++k) {
        const std::optional<Batch> batch = reader.next();
        if (!batch) throw Error("fine-tune: the reader ended before step " + std::to_string(step + 1));
        c10::IValue expected;
        {
          torch::NoGradGuard no_grad;
          expected = run(teacher, *batch);
        }
        torch::AutoGradMode grad(true);
        const c10::IValue actual = run(student, *batch);
        at::Tensor loss = distillation_loss(actual, expected, settings.distillation, batch->rows());
        if (settings.task_loss_weight > 0)
          loss = (1 - settings.task_loss_weight) * loss + settings.task_loss_weight * task_loss(actual, *batch);
        loss = loss / global_rows;  // this rank's share of the global mean
        loss.backward();
        const at::Tensor part = loss.detach().to(torch::kDouble);
        summed = summed.defined() ? summed + part : part;
      }
      if (summed.defined()) local_loss = summed.to(torch::kCPU).reshape({1});
      for (auto& p : parameters)
        if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);  // a rank with no rows this step
    });
    at::Tensor step_loss = local_loss;
    if (comm) {
      all_reduce_in_buckets(parameters, *comm);
      comm->all_reduce(step_loss);
    }
    if (settings.max_grad_norm > 0) torch::nn::utils::clip_grad_norm_(parameters, settings.max_grad_norm);
    for (auto& group : optimizer.param_groups())
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(learning_rate_at(settings, step));
    optimizer.step();
    report.loss.push_back(step_loss.item<double>());
    report.samples += settings.batch_size;
    report.step_seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count());
    if (!checkpoints.path.empty() && checkpoints.every > 0 && (step + 1) % checkpoints.every == 0 &&
        step + 1 < settings.steps)
      write_checkpoint(step + 1);
    const bool last = step + 1 == settings.steps;
    if (evaluate && settings.eval_every > 0 && ((step + 1) % settings.eval_every == 0 || last)) {
      for (auto& mask : masks) mask.fill_(1.0);  // evaluate the adapters as they will be merged
      torch::NoGradGuard no_grad;
      evaluate(student, step + 1);
    }
    if (progress_bar) {  // a terminal: one line redrawn every step
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double done = static_cast<double>(step + 1 - first_step);
      const int filled = static_cast<int>(30.0 * static_cast<double>(step + 1) / static_cast<double>(settings.steps));
      std::printf("\rfine-tune [%-30s] %lld/%lld loss %.4g %.0f samples/s ETA %.0f s%s",
                  std::string(static_cast<size_t>(filled), '#').c_str(), static_cast<long long>(step + 1),
                  static_cast<long long>(settings.steps), report.loss.back(), report.samples / elapsed,
                  elapsed / done * static_cast<double>(settings.steps - step - 1), last ? "\n" : "");
      std::fflush(stdout);
    }
    if ((step + 1) % settings.log_every == 0 || last) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      char line[200];
      const double done = static_cast<double>(step + 1 - first_step);
      std::snprintf(line, sizeof(line), "fine-tune step %lld/%lld: loss %.6g, lr %.2e, %.0f samples/s, ETA %.0f s",
                    static_cast<long long>(step + 1), static_cast<long long>(settings.steps), report.loss.back(),
                    learning_rate_at(settings, step), report.samples / elapsed,
                    elapsed / done * static_cast<double>(settings.steps - step - 1));
      if (progress_bar)
        log::debug(line);  // the bar shows it; the rank log keeps it
      else
        log::info(line);
    }
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  torch::NoGradGuard no_grad;
  for (const auto& l : layers) {
    if (l.weight_log_multiplier.defined())
      report.weight_scales[l.layer] = learned_scale(l.weight->qparams.scale, l.weight_log_multiplier.detach());
    if (l.input_log_multiplier.defined())
      report.input_scales[l.layer] = learned_scale(l.input->scale, l.input_log_multiplier.detach());
  }
  for (size_t i = 0; i < targets.size(); ++i) {
    const auto& t = targets[i];
    const LoraAdapter adapter{parameters[2 * i].detach(), parameters[2 * i + 1].detach(), scale, {}};  // mask: none
    report.adapters[t.quant.layer] = adapter;
    const at::Tensor adapted = adapted_weight(t.weight, adapter);
    if (!through_quantizer) {
      report.merged[t.quant.layer] = adapted;
      continue;
    }
    WeightQuant grid = *t.quant.weight;
    if (auto learned = report.weight_scales.find(t.quant.layer); learned != report.weight_scales.end())
      grid.qparams.scale = learned->second;
    report.merged[t.quant.layer] = fake_quantize_weight(adapted, grid, t.weights);
  }
  return report;
}

}  // namespace qforge
