// One rank's shard as the inputs of one segment of BlockSegments at a time:
// the calibration batches for segment 0, then what each segment passed on,
// kept per batch on the GPU or in pinned host memory (weights.gptq.offload).
// Sequential GPTQ runs each block once per pass over these instead of the
// whole model up to the block.
#pragma once
#include <torch/script.h>

#include <functional>
#include <string>
#include <vector>

#include "data/batches.h"
#include "qforge/config.h"

namespace qforge {

class BlockInputs {
 public:
  // Runs segment 0 (`method`) of a module on one batch of the shard.
  using RunFirst = std::function<c10::IValue(torch::jit::Module&, const std::string& method, const Batch&)>;

  BlockInputs(ShardSource shard, RunFirst run_first, const c10::Device& device, Autocast autocast,
              BlockOffload offload);

  size_t segment() const { return segment_; }
  // Runs segment method `method` of `module` (the segments' module or an
  // observed copy of it) over every input of the current segment.
  void sweep(torch::jit::Module& module, const std::string& method) const;
  // Runs the current segment and keeps what it passes on: the next segment's inputs.
  void advance(torch::jit::Module& module, const std::string& method);
  // Where the inputs are kept, and their size on this rank ("" before the first advance).
  std::string where() const;

 private:
  c10::IValue run(torch::jit::Module& module, const std::string& method, const std::vector<c10::IValue>& in) const;
  void choose_place(const std::vector<c10::IValue>& first, size_t batches);

  ShardSource shard_;
  RunFirst run_first_;
  c10::Device device_;
  Autocast autocast_;
  BlockOffload offload_;
  bool on_host_ = false;  // decided at the first advance
  size_t segment_ = 0;
  std::vector<std::vector<c10::IValue>> kept_;  // per batch, the current segment's arguments
};

}  // namespace qforge
