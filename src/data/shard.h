// Which rows each rank reads. Rows of all shape groups form one index space
// (groups in order); rank r of W takes the contiguous rows
// [floor(r*N/W), floor((r+1)*N/W)), so shard sizes differ by at most one and
// every row is read by exactly one rank. A batch never spans two groups,
// since rows of different groups have different shapes.
#pragma once
#include <cstdint>
#include <vector>

#include "qforge/compile.h"

namespace qforge {

// Rank `rank`'s rows of `total`, for `world` ranks.
RowRange shard_rows(int64_t total, int rank, int world);

// One batch to read: rows [row_begin, row_end) of group `group`, in group-local
// row numbers; `global_begin` is the first row's index in the global space.
struct BatchSlice {
  int group = 0;
  int64_t row_begin = 0;
  int64_t row_end = 0;
  int64_t global_begin = 0;
};

// The batches of `range` over groups of `group_rows` rows each, `batch_size`
// rows at most per batch.
std::vector<BatchSlice> plan_batches(const RowRange& range, const std::vector<int64_t>& group_rows, int64_t batch_size);

// Rank `rank`'s rows when whole batches of the one-rank batching are dealt
// out (contiguous, counts differing by at most one). Every batch then holds
// the same rows on any number of ranks, so the model computes each sample in
// the same company and statistics do not depend on the rank count. The
// reader's own batching of the returned range reproduces those batches.
RowRange shard_whole_batches(const std::vector<int64_t>& group_rows, int64_t batch_size, int rank, int world);

}  // namespace qforge
