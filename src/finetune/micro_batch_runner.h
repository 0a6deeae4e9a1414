// One fine-tuning micro-batch, run eagerly or replayed from CUDA graphs.
//
// On a GPU a step of a small or medium model is bound by the host: the
// TorchScript interpreter, autograd and ATen launch a few thousand kernels per
// micro-batch, and the GPU waits for each launch. Captured once in a CUDA
// graph, the same kernels are launched again with one call. A micro-batch is
// two graphs: the frozen teacher's forward, and the student's forward, loss
// and backward, whose gradients add into the adapters' .grad tensors (they
// live across steps, as do the weights, adapters and dropout masks the graphs
// read). Each input shape gets its own pair, captured on its run after
// `warmup_runs` eager ones (by then the interpreter has profiled and optimized
// the methods, and cuBLAS and cuDNN are set up); before a replay the batch is
// copied into the graphs' own input tensors. The optimizer, clipping and the
// all-reduce stay outside. A replay launches the kernels the eager run
// launched, on the same values, so it computes the same numbers.
//
// A capture that fails (a forward that reads a value back to the host, say)
// turns graphs off for the rest of the run with a warning; its micro-batch
// and every later one run eagerly.
#pragma once
#include <ATen/core/ivalue.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "finetune/teacher_cache.h"
#include "qforge/compile.h"

namespace qforge {

// The work of a micro-batch, as the trainer does it eagerly.
struct MicroBatchParts {
  std::function<c10::IValue(const Batch&)> teacher;  // the teacher's outputs, without gradients
  // The task loss's labels, checked against the outputs' shape, on the
  // device; undefined without a task loss. Runs outside any graph.
  std::function<at::Tensor(const Batch&, const c10::IValue& expected)> labels;
  // The student's forward, its loss against `expected` and `labels`, and
  // backward; returns the loss, detached.
  std::function<at::Tensor(const Batch&, const c10::IValue& expected, const at::Tensor& labels)> student;
  // Marks the end of a timed section (StepBreakdown); optional.
  std::function<void(const std::string&)> section;
};

class MicroBatchRunner {
 public:
  // graphs: replay from CUDA graphs where LibTorch has CUDA and the batches
  // are on a GPU; otherwise every micro-batch runs eagerly.
  MicroBatchRunner(MicroBatchParts parts, bool graphs, int64_t warmup_runs = 2);
  ~MicroBatchRunner();
  MicroBatchRunner(const MicroBatchRunner&) = delete;
  MicroBatchRunner& operator=(const MicroBatchRunner&) = delete;

  // Runs one micro-batch; the teacher's outputs come from `teacher_outputs`
  // when it kept them. Returns the loss, detached.
  at::Tensor run(const Batch& batch, TeacherCache& teacher_outputs);

  int64_t replayed() const { return replayed_; }  // micro-batches replayed from graphs so far

 private:
  struct Graphs;  // the pair of one input shape (CUDA only)
  at::Tensor eager(const Batch& batch, TeacherCache& teacher_outputs);
  at::Tensor replay(Graphs& graphs, const Batch& batch, TeacherCache& teacher_outputs);
  Graphs* graphs_for(const Batch& batch);  // null: run eagerly
  void give_up(const std::string& why);    // graphs off for the rest of the run

  MicroBatchParts parts_;
  bool graphs_on_;
  int64_t warmup_runs_;
  std::map<std::string, int64_t> eager_runs_;              // per input shape
  std::map<std::string, std::unique_ptr<Graphs>> graphs_;  // per input shape
  int64_t replayed_ = 0;
};

}  // namespace qforge
