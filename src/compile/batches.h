// How the compile steps get their data and run the model: a Runner runs a
// module (the model or a rewritten copy) on one batch; a ShardSource is one
// rank's part of a sample set, read with the prefetching reader.
#pragma once
#include <torch/script.h>

#include <functional>

#include "qforge/sample_reader.h"

namespace qforge {

using Runner = std::function<c10::IValue(torch::jit::Module& module, const Batch& batch)>;

struct ShardSource {
  DatasetInfo info;
  RowRange rows;
  SampleReaderOptions options;
};

// Calls `body` with every batch of the shard, in order.
void for_each_batch(const ShardSource& source, const std::function<void(const Batch&)>& body);

// The batch with its tensors on `device` (the batch itself when they are there).
Batch to_device(const Batch& batch, const c10::Device& device);

}  // namespace qforge
