// The float teacher's outputs kept for the micro-batches a rank computes
// again in a later epoch. The teacher is frozen and deterministic (eval mode,
// the same rows through the same transform), so a micro-batch of the same rows
// gets the same outputs: computing them once is exact, and it saves the
// teacher's forward pass (a third of a step) in every later epoch. Only
// micro-batches that recur in this run's plan are kept, each until its last
// use, while the kept outputs fit in the budget.
#pragma once
#include <ATen/core/ivalue.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "data/dataset.h"
#include "data/shard.h"

namespace qforge {

class TeacherCache {
 public:
  // `planned`: every micro-batch this rank computes, in order. budget_bytes 0: keep nothing.
  TeacherCache(const std::vector<BatchSlice>& planned, int64_t budget_bytes);

  // The teacher's outputs for `batch`: kept ones, or `compute()`'s (kept
  // when the batch recurs later and they fit).
  c10::IValue outputs(const Batch& batch, const std::function<c10::IValue()>& compute);

  // The same in two parts, for outputs that land in tensors which are
  // overwritten later (CUDA graphs): take() counts this use of `batch` and
  // gives its kept outputs, if any; when it gave none, recurs() says whether
  // the outputs computed now are wanted, and keep() keeps them if they fit.
  std::optional<c10::IValue> take(const Batch& batch);
  bool recurs(const Batch& batch) const;
  void keep(const Batch& batch, const c10::IValue& outputs);

  int64_t reused() const { return reused_; }          // micro-batches served from the cache so far
  int64_t kept_bytes() const { return kept_bytes_; }  // held now

 private:
  using Key = std::pair<int64_t, int64_t>;  // first global row, rows
  std::map<Key, int64_t> uses_left_;        // planned uses not yet served
  std::map<Key, c10::IValue> kept_;
  int64_t budget_bytes_;
  int64_t kept_bytes_ = 0;
  int64_t reused_ = 0;
};

}  // namespace qforge
