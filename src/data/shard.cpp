#include "data/shard.h"

#include <algorithm>

#include "qforge/errors.h"

namespace qforge {

RowRange shard_rows(int64_t total, int rank, int world) {
  if (world < 1 || rank < 0 || rank >= world || total < 0)
    throw Error("shard_rows: rank " + std::to_string(rank) + " of " + std::to_string(world) + " ranks over " +
                std::to_string(total) + " rows is not a valid split");
  // 128-bit products: total * world cannot overflow for any realistic size.
  const auto bound = [&](int r) { return static_cast<int64_t>(static_cast<__int128>(total) * r / world); };
  return {bound(rank), bound(rank + 1)};
}

std::vector<BatchSlice> plan_batches(const RowRange& range, const std::vector<int64_t>& group_rows,
                                     int64_t batch_size) {
  if (batch_size < 1) throw Error("plan_batches: batch size must be positive");
  std::vector<BatchSlice> out;
  int64_t group_start = 0;
  for (size_t g = 0; g < group_rows.size(); ++g) {
    const int64_t group_end = group_start + group_rows[g];
    const int64_t begin = std::max(range.begin, group_start);
    const int64_t end = std::min(range.end, group_end);
    for (int64_t row = begin; row < end; row += batch_size) {
      const int64_t stop = std::min(end, row + batch_size);
      out.push_back({static_cast<int>(g), row - group_start, stop - group_start, row});
    }
    group_start = group_end;
  }
  return out;
}

RowRange shard_whole_batches(const std::vector<int64_t>& group_rows, int64_t batch_size, int rank, int world) {
  int64_t total = 0;
  for (auto rows : group_rows) total += rows;
  const auto batches = plan_batches({0, total}, group_rows, batch_size);
  const RowRange mine = shard_rows(static_cast<int64_t>(batches.size()), rank, world);
  if (mine.size() == 0) {  // more ranks than batches: an empty range
    const int64_t at = mine.begin < static_cast<int64_t>(batches.size()) ? batches[mine.begin].global_begin : total;
    return {at, at};
  }
  const auto& last = batches[mine.end - 1];
  return {batches[mine.begin].global_begin, last.global_begin + (last.row_end - last.row_begin)};
}

}  // namespace qforge
