#include "data/batches.h"

#include <algorithm>

namespace qforge {

void for_each_batch(const ShardSource& source, const std::function<void(const Batch&)>& body) {
  SampleReader reader(source.info, source.rows, source.options);
  while (auto batch = reader.next()) body(*batch);
}

Batch to_device(const Batch& batch, const c10::Device& device) {
  const auto there = [&](const at::Tensor& t) { return !t.defined() || t.device() == device; };
  if (std::all_of(batch.inputs.begin(), batch.inputs.end(), there) && there(batch.labels)) return batch;
  Batch moved = batch;
  for (auto& t : moved.inputs) t = t.to(device, /*non_blocking=*/true);
  if (moved.labels.defined()) moved.labels = moved.labels.to(device, /*non_blocking=*/true);
  return moved;
}

}  // namespace qforge
