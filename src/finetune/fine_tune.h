// The fine-tuning loop over a QaLoraTrainer (trainer.h): resume, steps with
// stop requests agreed across ranks, checkpoints, evaluations, progress
// reports, merge. Collective: every rank calls it with the same options.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "finetune/trainer.h"

namespace qforge {

struct FineTuneReport {
  bool finished = true;      // false: stopped early (checkpointed) by stop_after or a signal
  int stop_signal = 0;       // the signal some rank received (0: stop_after or finished)
  int64_t resumed_from = 0;  // steps a checkpoint had completed
  std::vector<double> loss;  // global mean loss of every step
  MergedAdapters merged;     // after the last step (empty when stopped early)
  double seconds = 0;
  int64_t samples = 0;               // rows processed over all ranks
  std::vector<double> step_seconds;  // wall time of each step of this run (ends in an all-reduce)
  // This rank's micro-batches whose teacher outputs were kept from an earlier epoch.
  int64_t teacher_outputs_reused = 0;
  // This rank's micro-batches replayed from CUDA graphs (settings.cuda_graphs).
  int64_t graph_replays = 0;
};

struct FineTuneHooks {
  // Every settings.eval_every steps and after the last, on every rank
  // (collectively), with the model being trained and the steps completed.
  std::function<EvaluationResult(torch::jit::Module& student, int64_t step)> evaluate;
  // After every step, on every rank.
  std::function<void(const FineTuneProgress&)> progress;
};

FineTuneReport fine_tune(const torch::jit::Module& model, const FineTuneOptions& options, Communicator* comm,
                         const Runtime& runtime, const FineTuneHooks& hooks = {});

}  // namespace qforge
