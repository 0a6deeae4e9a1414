#include "finetune/fine_tune.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "data/shard.h"
#include "runtime/logger.h"
#include "runtime/stop_signal.h"

namespace qforge {
namespace {

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

// The stop signal some rank received (0: none), the same on every rank, so
// every rank stops at the same step.
int agreed_stop_signal(Communicator* comm) {
  at::Tensor signal = at::full({1}, stop_signal(), at::kInt);
  if (comm) comm->all_reduce(signal, {ReduceOp::Max});
  return signal.item<int>();
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

FineTuneReport fine_tune(const torch::jit::Module& model, const FineTuneOptions& options, Communicator* comm,
                         const Runtime& runtime, const FineTuneHooks& hooks) {
  const FineTuneSettings& settings = options.settings;
  const CheckpointPlan& checkpoints = options.checkpoints;
  QaLoraTrainer trainer(model, options, comm);
  FineTuneReport report;
  runtime.collective_phase("resume", [&] {
    if (checkpoints.path.empty() || !checkpoints.resume || !std::filesystem::exists(checkpoints.path)) return;
    const CheckpointState state = trainer.resume(checkpoints.path);
    report.loss = state.loss;
    report.resumed_from = state.step;
    log::info("fine-tune: resumed from " + checkpoints.path + " after step " + std::to_string(state.step));
  });
  const auto save = [&](int64_t steps_done) {
    runtime.collective_phase(
        "checkpoint",
        [&] {
          if (runtime.is_root()) trainer.save(checkpoints.path, steps_done, report.loss);
        },
        Runtime::PhaseWork::RootOnly);
  };
  const int64_t first_step = report.resumed_from;
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->size() : 1;  // null: this process alone
  const StepBatches batches = plan_step_batches(settings, first_step, options.data, rank, world);
  SampleReader reader(options.data, batches.slices, options.reading);
  trainer.plan_teacher_outputs(batches.slices);
  const auto start = std::chrono::steady_clock::now();
  for (int64_t step = first_step; step < settings.steps; ++step) {
    const int signal = agreed_stop_signal(comm);
    if (signal != 0 || (checkpoints.stop_after > 0 && step - first_step == checkpoints.stop_after)) {
      if (!checkpoints.path.empty()) save(step);
      report.finished = false;
      report.stop_signal = signal;
      log::info("fine-tune: stopped after step " + std::to_string(step) +
                (signal ? " (signal " + std::to_string(signal) + ")" : std::string(" (stop_after_steps)")) +
                (checkpoints.path.empty() ? "" : "; checkpoint " + checkpoints.path + ", run again to resume"));
      return report;
    }
    const auto step_start = std::chrono::steady_clock::now();
    report.loss.push_back(trainer.step(step, batches.per_step[step - first_step], reader, runtime));
    report.samples += settings.batch_size;
    report.step_seconds.push_back(seconds_since(step_start));
    const int64_t done = step + 1;
    if (!checkpoints.path.empty() && checkpoints.every > 0 && done % checkpoints.every == 0 && done < settings.steps)
      save(done);
    FineTuneProgress progress;
    progress.step = done;
    progress.steps = settings.steps;
    progress.loss = report.loss.back();
    progress.learning_rate = learning_rate_at(settings, step);
    const double elapsed = seconds_since(start);
    progress.samples_per_second = static_cast<double>(report.samples) / elapsed;
    progress.eta_seconds =
        elapsed / static_cast<double>(done - first_step) * static_cast<double>(settings.steps - done);
    if (hooks.evaluate && settings.eval_every > 0 && (done % settings.eval_every == 0 || done == settings.steps)) {
      torch::NoGradGuard no_grad;
      progress.evaluation = hooks.evaluate(trainer.student_for_evaluation(), done);
    }
    if (hooks.progress) hooks.progress(progress);
  }
  report.seconds = seconds_since(start);
  report.teacher_outputs_reused = trainer.teacher_outputs_reused();
  if (report.teacher_outputs_reused > 0)
    log::info("fine-tune: the teacher's outputs of " + std::to_string(report.teacher_outputs_reused) +
              " micro-batches came from an earlier epoch (teacher_cache_mb)");
  report.graph_replays = trainer.graph_replays();
  if (report.graph_replays > 0)
    log::info("fine-tune: " + std::to_string(report.graph_replays) + " of " + std::to_string(batches.slices.size()) +
              " micro-batches replayed from CUDA graphs (cuda_graphs)");
  if (trainer.breakdown().on() && runtime.is_root())  // the first 3 steps carry one-time work
    log::info("fine-tune step breakdown, median s per step after step 3: " + trainer.breakdown().summary(3));
  report.merged = trainer.merge();
  return report;
}

}  // namespace qforge
