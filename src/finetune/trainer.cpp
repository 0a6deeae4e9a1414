#include "finetune/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "data/shard.h"
#include "finetune/micro_batch_runner.h"
#include "finetune/multi_tensor_adamw.h"
#include "metrics/output_error.h"
#include "metrics/predictions.h"
#include "qforge/errors.h"
#include "quant/observer.h"
#include "runtime/device.h"

namespace qforge {
namespace {

constexpr int64_t kBucketElements = 1 << 22;  // gradients travel in buckets of at most 16 MiB of float32

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

// The labels of the task loss, on the device: one class per prediction of
// [batch, classes] or [batch, positions, classes] outputs. They are checked
// against the teacher's outputs, which the student's match in shape, so the
// check runs before the student's step (outside a CUDA graph).
at::Tensor task_labels(const Batch& batch, const c10::IValue& expected) {
  const auto logits = prediction_logits(expected, batch.rows());
  const auto labels = logits ? class_labels(batch.labels, expected.toTensor()) : std::nullopt;
  if (!labels)
    throw DataError(
        "compile_options.fine_tune.task_loss_weight needs labels in the data and [batch, classes] or "
        "[batch, positions, classes] outputs from the model, one class label per prediction (sample " +
        std::to_string(batch.global_begin) + ")");
  return *labels;
}

// Sum over the rows of the cross-entropy of the labels: one per row of
// [batch, classes] logits, the mean over positions of [batch, positions, classes].
at::Tensor task_loss(const c10::IValue& student, const at::Tensor& labels) {
  const at::Tensor& out = student.toTensor();
  const double positions = out.dim() == 3 ? static_cast<double>(out.size(1)) : 1.0;
  return at::cross_entropy_loss(out.reshape({-1, out.size(-1)}), labels, {}, at::Reduction::Sum) / positions;
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

// Queued back to back: the caller waits once, after the last bucket (wait_queued).
void all_reduce_in_buckets(const std::vector<at::Tensor>& parameters, Communicator& comm) {
  std::vector<at::Tensor> bucket;
  int64_t elements = 0;
  const auto flush = [&] {
    if (bucket.empty()) return;
    std::vector<at::Tensor> flat;
    for (const auto& p : bucket) flat.push_back(p.grad().reshape({-1}));
    at::Tensor joined = at::cat(flat);
    comm.all_reduce_queued(joined);
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

QaLoraTrainer::QaLoraTrainer(const torch::jit::Module& model, FineTuneOptions options, Communicator* comm)
    : options_(std::move(options)),
      comm_(comm),
      teacher_(options_.teacher ? *options_.teacher : model),
      teacher_outputs_(std::make_unique<TeacherCache>(std::vector<BatchSlice>{}, 0)),  // until planned
      breakdown_(options_.reading.cuda_device) {
  const FineTuneSettings& settings = options_.settings;
  const bool through_quantizer = settings.method == FineTuneMethod::QaLora;
  torch::manual_seed(static_cast<uint64_t>(options_.seed));
  if (through_quantizer) layers_ = options_.others;
  scale_ = settings.lora_alpha / static_cast<double>(settings.lora_rank);
  // Adapters and learned ranges live on the model's device.
  const auto& targets = options_.targets;
  const c10::Device device = targets.empty() ? c10::Device(c10::kCPU) : targets.front().weight.device();
  const auto on_device = torch::TensorOptions().device(device);
  for (const auto& t : targets) {
    const int64_t outputs = t.weight.size(0), inputs = t.weight.numel() / outputs;
    LoraAdapter adapter;
    adapter.scale = scale_;
    // Drawn on the CPU, then placed on the device: the same start on every device.
    adapter.a = (torch::randn({settings.lora_rank, inputs}) / std::sqrt(static_cast<double>(inputs)))
                    .to(device)
                    .requires_grad_();
    adapter.b = torch::zeros({outputs, settings.lora_rank}, on_device).requires_grad_();
    if (settings.lora_dropout > 0) masks_.push_back(adapter.mask = torch::ones({settings.lora_rank}, on_device));
    if (t.keep.defined()) adapter.keep = t.keep.to(device, t.weight.scalar_type());
    parameters_.push_back(adapter.a);
    parameters_.push_back(adapter.b);
    LayerFakeQuant layer;  // plain LoRA: the adapters on float weights, nothing quantized
    if (through_quantizer) layer = t.quant;
    layer.layer = t.quant.layer;
    layer.lora = adapter;
    layers_.push_back(layer);
  }
  // Learned ranges: one log-multiplier per scale, starting at 0 (the calibrated scale).
  if (settings.learn_ranges)
    for (auto& l : layers_) {
      if (l.weight)
        parameters_.push_back(l.weight_log_multiplier =
                                  torch::zeros({l.weight->qparams.scale.numel()}, on_device).requires_grad_());
      if (l.input)
        parameters_.push_back(l.input_log_multiplier =
                                  torch::zeros({l.input->scale.numel()}, on_device).requires_grad_());
      learned_ranges_ += (l.weight ? 1 : 0) + (l.input ? 1 : 0);
    }
  student_ = with_fake_quantization(model, options_.method, layers_, FakeQuantOps::Training);
  for (auto p : student_.parameters()) {  // only the adapters (and learned ranges) learn
    const bool adapter =
        std::any_of(parameters_.begin(), parameters_.end(), [&](const at::Tensor& a) { return a.is_same(p); });
    if (!adapter && p.requires_grad()) p.detach_();
  }
  optimizer_ = std::make_unique<MultiTensorAdamW>(
      parameters_, torch::optim::AdamWOptions(settings.learning_rate).weight_decay(settings.weight_decay));
  runner_ = std::make_unique<MicroBatchRunner>(micro_batch_parts(), settings.cuda_graphs);
}

MicroBatchParts QaLoraTrainer::micro_batch_parts() {
  const FineTuneSettings& s = options_.settings;
  MicroBatchParts parts;
  parts.teacher = [this](const Batch& batch) {
    torch::NoGradGuard no_grad;
    const Autocast mode = options_.settings.teacher_autocast;
    if (mode == Autocast::Off || options_.reading.cuda_device < 0) return options_.run(teacher_, batch);
    c10::IValue outputs;
    {
      const AutocastScope autocast(mode, c10::Device(c10::kCUDA, options_.reading.cuda_device));
      outputs = options_.run(teacher_, batch);
    }
    // The losses compare in float32, whatever type the forward computed in.
    return map_tensors(outputs, [](const at::Tensor& t) {
      return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16 ? t.to(at::kFloat) : t;
    });
  };
  parts.labels = [&s](const Batch& batch, const c10::IValue& expected) {
    return s.task_loss_weight > 0 ? task_labels(batch, expected) : at::Tensor();
  };
  parts.student = [this, &s](const Batch& batch, const c10::IValue& expected, const at::Tensor& labels) {
    torch::AutoGradMode grad(true);
    const c10::IValue actual = options_.run(student_, batch);
    at::Tensor loss = distillation_loss(actual, expected, s.distillation, batch.rows());
    if (labels.defined()) loss = (1 - s.task_loss_weight) * loss + s.task_loss_weight * task_loss(actual, labels);
    loss = loss / static_cast<double>(s.batch_size);  // this rank's share of the global mean
    loss.backward();
    return loss.detach();
  };
  parts.section = [this](const std::string& name) { breakdown_.end_section(name); };
  return parts;
}

QaLoraTrainer::~QaLoraTrainer() = default;

void QaLoraTrainer::plan_teacher_outputs(const std::vector<BatchSlice>& planned) {
  teacher_outputs_ = std::make_unique<TeacherCache>(planned, options_.settings.teacher_cache_mb << 20);
}

int64_t QaLoraTrainer::teacher_outputs_reused() const { return teacher_outputs_->reused(); }

int64_t QaLoraTrainer::graph_replays() const { return runner_->replayed(); }

// In place: CUDA graphs add into these tensors, and a rank with no rows in a
// step all-reduces zeros.
void QaLoraTrainer::zero_gradients() {
  std::vector<at::Tensor> grads;
  for (auto& p : parameters_) {
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    grads.push_back(p.grad());
  }
  at::_foreach_zero_(grads);
}

std::string QaLoraTrainer::fingerprint() const {
  const FineTuneSettings& s = options_.settings;
  std::string text = "steps=" + std::to_string(s.steps) + " batch=" + std::to_string(s.batch_size) +
                     " rank=" + std::to_string(s.lora_rank) + " seed=" + std::to_string(options_.seed) +
                     " method=" + std::to_string(static_cast<int>(s.method)) + " dropout=" + c10::str(s.lora_dropout) +
                     " ranges=" + std::to_string(learned_ranges_) +
                     " rows=" + std::to_string(options_.data.total_rows()) + " layers=";
  for (const auto& t : options_.targets)  // a pruned layer's mask: adapters trained for another one do not fit
    text += t.quant.layer + c10::str(t.weight.sizes()) +
            (t.keep.defined() ? " kept " + std::to_string(t.keep.sum().item<int64_t>()) : std::string()) + ",";
  return text;
}

CheckpointState QaLoraTrainer::resume(const std::string& path) {
  return load_checkpoint(path, fingerprint(), parameters_, *optimizer_);
}

void QaLoraTrainer::save(const std::string& path, int64_t steps_done, const std::vector<double>& losses) const {
  save_checkpoint(path, fingerprint(), {steps_done, losses}, parameters_, *optimizer_);
}

double QaLoraTrainer::step(int64_t step, int64_t micro_batches, SampleReader& reader, const Runtime& runtime) {
  const FineTuneSettings& settings = options_.settings;
  at::Tensor loss_sum = torch::zeros({1}, torch::kDouble);
  draw_dropout_masks(masks_, settings.lora_dropout, options_.seed, step);
  breakdown_.begin_step();
  runtime.collective_phase("fine-tune step " + std::to_string(step + 1), [&] {
    zero_gradients();
    at::Tensor summed;  // on the device: read once per step, not once per micro-batch
    for (int64_t k = 0; k < micro_batches; ++k) {
      const std::optional<Batch> batch = reader.next();
      if (!batch) throw Error("fine-tune: the reader ended before step " + std::to_string(step + 1));
      breakdown_.end_section("read");
      const at::Tensor part = runner_->run(*batch, *teacher_outputs_).to(torch::kDouble);
      summed = summed.defined() ? summed + part : part;
    }
    if (summed.defined()) loss_sum = summed.to(torch::kCPU).reshape({1});
  });
  if (comm_ && comm_->size() > 1) {  // one rank holds the whole batch already
    all_reduce_in_buckets(parameters_, *comm_);
    comm_->all_reduce(loss_sum);  // on the host, while the buckets travel
    comm_->wait_queued();
    breakdown_.end_section("all-reduce");
  }
  if (settings.max_grad_norm > 0) clip_gradient_norm(parameters_, settings.max_grad_norm);
  for (auto& group : optimizer_->param_groups())
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(learning_rate_at(settings, step));
  optimizer_->step();
  const double loss = loss_sum.item<double>();
  breakdown_.end_section("optimizer");
  breakdown_.end_step();
  return loss;
}

torch::jit::Module& QaLoraTrainer::student_for_evaluation() {
  torch::NoGradGuard no_grad;
  for (auto& mask : masks_) mask.fill_(1.0);
  return student_;
}

MergedAdapters QaLoraTrainer::merge() const {
  torch::NoGradGuard no_grad;
  MergedAdapters out;
  for (const auto& l : layers_) {
    if (l.weight_log_multiplier.defined())
      out.weight_scales[l.layer] = learned_scale(l.weight->qparams.scale, l.weight_log_multiplier.detach());
    if (l.input_log_multiplier.defined())
      out.input_scales[l.layer] = learned_scale(l.input->scale, l.input_log_multiplier.detach());
  }
  const bool through_quantizer = options_.settings.method == FineTuneMethod::QaLora;
  for (size_t i = 0; i < options_.targets.size(); ++i) {
    const auto& t = options_.targets[i];
    LoraAdapter adapter{parameters_[2 * i].detach(), parameters_[2 * i + 1].detach(), scale_, {}};  // mask: none
    if (t.keep.defined()) adapter.keep = t.keep.to(t.weight.device(), t.weight.scalar_type());
    out.adapters[t.quant.layer] = adapter;
    const at::Tensor adapted = adapted_weight(t.weight, adapter);
    if (!through_quantizer) {
      out.weights[t.quant.layer] = adapted;
      continue;
    }
    WeightQuant grid = *t.quant.weight;
    if (auto learned = out.weight_scales.find(t.quant.layer); learned != out.weight_scales.end())
      grid.qparams.scale = learned->second;
    out.weights[t.quant.layer] = fake_quantize_weight(adapted, grid, t.weights);
  }
  return out;
}

}  // namespace qforge
