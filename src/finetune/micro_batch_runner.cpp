#include "finetune/micro_batch_runner.h"

#include <ATen/ATen.h>

#include "metrics/output_error.h"
#include "qforge_version_config.h"
#include "runtime/logger.h"

#if QFORGE_HAVE_CUDA
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

namespace qforge {

#if QFORGE_HAVE_CUDA

namespace {

// Each shape's graphs hold their own inputs and a step's worth of kernels;
// further shapes run eagerly.
constexpr size_t kMaxGraphedShapes = 8;

// The graphs of a micro-batch are those of its inputs' and labels' shapes and types.
std::string shape_key(const Batch& batch) {
  std::string key;
  for (const auto& t : batch.inputs) key += c10::str(t.sizes(), t.scalar_type(), t.device());
  if (batch.labels.defined()) key += "labels" + c10::str(batch.labels.sizes(), batch.labels.scalar_type());
  return key;
}

// Every tensor of an output, in a fixed order (output_tensors keeps only floating-point ones).
std::vector<at::Tensor> tensors_of(const c10::IValue& value) {
  std::vector<at::Tensor> out;
  map_tensors(value, [&](const at::Tensor& t) {
    out.push_back(t);
    return t;
  });
  return out;
}

}  // namespace

struct MicroBatchRunner::Graphs {
  Graphs(const Batch& batch, at::cuda::MempoolId_t shared_pool) : pool(shared_pool) {
    inputs.group = batch.group;
    inputs.global_begin = batch.global_begin;
    for (const auto& t : batch.inputs) inputs.inputs.push_back(t.clone());
    // Captures need a stream of their own: the default stream cannot capture,
    // and a pooled stream may be the reader's copy stream.
    C10_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  }
  ~Graphs() {
    teacher.reset();
    student.reset();
    cudaStreamDestroy(stream);
  }

  // Captures `work` into `graph` on this pair's stream, its memory from `pool`.
  void capture(at::cuda::CUDAGraph& graph, const std::function<void()>& work);

  Batch inputs;          // the graphs' own input tensors (no labels: the student's graph takes checked ones)
  c10::IValue expected;  // the teacher graph's outputs
  at::Tensor labels;     // the student graph's labels
  at::Tensor loss;       // the student graph's loss
  // Every graph of a run allocates from one pool: a graph's outputs are read
  // before any other graph replays (teacher, student, the loss copied out),
  // so what one graph writes never holds what another still needs, and the
  // pool is as large as the largest shape's step rather than their sum.
  at::cuda::MempoolId_t pool;
  cudaStream_t stream = nullptr;
  at::cuda::CUDAGraph teacher, student;
  bool student_captured = false;
};

void MicroBatchRunner::Graphs::capture(at::cuda::CUDAGraph& graph, const std::function<void()>& work) {
  const at::cuda::CUDAStream computing = at::cuda::getCurrentCUDAStream();
  const at::cuda::CUDAStream capturing = at::cuda::getStreamFromExternal(stream, computing.device_index());
  at::cuda::CUDAEvent inputs_written;  // the graphs' inputs are written on the computing stream
  inputs_written.record(computing);
  inputs_written.block(capturing);
  const at::cuda::CUDAStreamGuard on_capturing(capturing);
  // Casts kept by autocast would outlive the capture that made them.
  const bool autocast_cache = at::autocast::is_autocast_cache_enabled();
  at::autocast::set_autocast_cache_enabled(false);
  bool begun = false;
  try {
    // Thread-local: the reader's thread keeps copying batches meanwhile.
    graph.capture_begin(pool, cudaStreamCaptureModeThreadLocal);
    begun = true;
    work();
    graph.capture_end();
  } catch (...) {
    at::autocast::set_autocast_cache_enabled(autocast_cache);
    // End the stream's capture, and take the pool's allocations back from it,
    // so the allocator and the stream are as they were.
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &status) == cudaSuccess && status != cudaStreamCaptureStatusNone) {
      cudaGraph_t partial = nullptr;
      if (cudaStreamEndCapture(stream, &partial) == cudaSuccess && partial) cudaGraphDestroy(partial);
    }
    (void)cudaGetLastError();
    if (begun) {
      const auto device = computing.device_index();
      try {
        c10::cuda::CUDACachingAllocator::endAllocateToPool(device, pool);
      } catch (const std::exception&) {  // capture_end had ended it
      }
      c10::cuda::CUDACachingAllocator::releasePool(device, pool);
    }
    throw;
  }
  at::autocast::set_autocast_cache_enabled(autocast_cache);
}

MicroBatchRunner::Graphs* MicroBatchRunner::graphs_for(const Batch& batch) {
  if (!graphs_on_) return nullptr;
  const std::string key = shape_key(batch);
  if (const auto found = graphs_.find(key); found != graphs_.end()) return found->second.get();
  int64_t& runs = eager_runs_[key];
  if (runs < warmup_runs_ || graphs_.size() >= kMaxGraphedShapes) {
    ++runs;
    return nullptr;
  }
  try {
    // The eager runs' cached blocks go back to the driver first, so the
    // graphs' pool can take that memory instead of adding to it.
    c10::cuda::CUDACachingAllocator::emptyCache();
    auto graphs = std::make_unique<Graphs>(
        batch, graphs_.empty() ? at::cuda::graph_pool_handle() : graphs_.begin()->second->pool);
    Graphs& g = *graphs;
    g.capture(g.teacher, [&] { g.expected = parts_.teacher(g.inputs); });
    return (graphs_[key] = std::move(graphs)).get();
  } catch (const std::exception& e) {
    give_up(std::string("the teacher's forward could not be captured: ") + e.what());
    return nullptr;
  }
}

at::Tensor MicroBatchRunner::replay(Graphs& g, const Batch& batch, TeacherCache& teacher_outputs) {
  for (size_t i = 0; i < batch.inputs.size(); ++i) g.inputs.inputs[i].copy_(batch.inputs[i]);
  if (std::optional<c10::IValue> kept = teacher_outputs.take(batch)) {
    const auto from = tensors_of(*kept), to = tensors_of(g.expected);
    for (size_t i = 0; i < to.size(); ++i) to[i].copy_(from[i]);
  } else {
    g.teacher.replay();
    if (teacher_outputs.recurs(batch))  // the graph's outputs are overwritten by its next replay
      teacher_outputs.keep(batch, map_tensors(g.expected, [](const at::Tensor& t) { return t.clone(); }));
  }
  if (parts_.section) parts_.section("teacher forward");
  const at::Tensor labels = parts_.labels(batch, g.expected);
  if (!g.student_captured) {
    g.labels = labels.defined() ? labels.clone() : labels;
    try {
      g.capture(g.student, [&] { g.loss = parts_.student(g.inputs, g.expected, g.labels); });
      g.student_captured = true;
    } catch (const std::exception& e) {
      give_up(std::string("the student's step could not be captured: ") + e.what());
      const at::Tensor loss = parts_.student(batch, g.expected, labels);
      if (parts_.section) parts_.section("student forward + loss + backward");
      return loss;
    }
  } else if (labels.defined()) {
    g.labels.copy_(labels);
  }
  g.student.replay();
  ++replayed_;
  if (parts_.section) parts_.section("student forward + loss + backward");
  return g.loss.clone();  // the graph's loss is overwritten by its next replay
}

#else  // LibTorch without CUDA: every micro-batch runs eagerly

struct MicroBatchRunner::Graphs {};

MicroBatchRunner::Graphs* MicroBatchRunner::graphs_for(const Batch&) { return nullptr; }

at::Tensor MicroBatchRunner::replay(Graphs&, const Batch& batch, TeacherCache& teacher_outputs) {
  return eager(batch, teacher_outputs);
}

#endif

MicroBatchRunner::MicroBatchRunner(MicroBatchParts parts, bool graphs, int64_t warmup_runs)
    : parts_(std::move(parts)), graphs_on_(graphs && QFORGE_HAVE_CUDA), warmup_runs_(warmup_runs) {}

MicroBatchRunner::~MicroBatchRunner() = default;

at::Tensor MicroBatchRunner::run(const Batch& batch, TeacherCache& teacher_outputs) {
  if (!graphs_on_) graphs_.clear();  // after give_up: no replay holds them any more
  if (Graphs* graphs = batch.rows() > 0 && batch.inputs[0].is_cuda() ? graphs_for(batch) : nullptr)
    return replay(*graphs, batch, teacher_outputs);
  return eager(batch, teacher_outputs);
}

at::Tensor MicroBatchRunner::eager(const Batch& batch, TeacherCache& teacher_outputs) {
  const c10::IValue expected = teacher_outputs.outputs(batch, [&] { return parts_.teacher(batch); });
  if (parts_.section) parts_.section("teacher forward");
  const at::Tensor loss = parts_.student(batch, expected, parts_.labels(batch, expected));
  if (parts_.section) parts_.section("student forward + loss + backward");
  return loss;
}

void MicroBatchRunner::give_up(const std::string& why) {
  graphs_on_ = false;
  log::warn("fine-tune: CUDA graphs are off for the rest of the run, micro-batches run eagerly (" + why + ")");
}

}  // namespace qforge
