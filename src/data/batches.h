// One rank's part of a sample set, read batch by batch with the prefetching
// reader, for the compile's stages and the fine-tuning alike.
#pragma once
#include <torch/script.h>

#include <functional>

#include "data/sample_reader.h"

namespace qforge {

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
