#include "data/shard.h"
#include "test_helpers.h"

using namespace qforge;

TEST(Shard, EveryRowExactlyOnceAndSizesDifferByAtMostOne) {
  for (int64_t total : {0, 1, 2, 5, 7, 10, 100, 1001}) {
    for (int world = 1; world <= 7; ++world) {
      std::vector<int> seen(static_cast<size_t>(total), 0);
      int64_t smallest = total, largest = 0;
      for (int r = 0; r < world; ++r) {
        const auto range = shard_rows(total, r, world);
        ASSERT_LE(range.begin, range.end);
        for (int64_t i = range.begin; i < range.end; ++i) seen[i]++;
        smallest = std::min(smallest, range.size());
        largest = std::max(largest, range.size());
      }
      for (int64_t i = 0; i < total; ++i)
        ASSERT_EQ(seen[i], 1) << "row " << i << " total " << total << " world " << world;
      EXPECT_LE(largest - smallest, 1);
    }
  }
}

TEST(Shard, KnownSplitOfTenRowsOverThreeRanks) {
  EXPECT_EQ(shard_rows(10, 0, 3), (RowRange{0, 3}));
  EXPECT_EQ(shard_rows(10, 1, 3), (RowRange{3, 6}));
  EXPECT_EQ(shard_rows(10, 2, 3), (RowRange{6, 10}));
}

TEST(Shard, InvalidRankIsAnError) {
  EXPECT_THROW(shard_rows(10, 3, 3), std::exception);
  EXPECT_THROW(shard_rows(10, 0, 0), std::exception);
}

TEST(Shard, BatchesNeverSpanGroupsAndCoverTheRange) {
  const std::vector<int64_t> groups{5, 0, 7, 3};
  const RowRange range{2, 14};
  const auto batches = plan_batches(range, groups, 4);
  int64_t next = range.begin;
  const std::vector<int64_t> starts{0, 5, 5, 12};
  for (const auto& b : batches) {
    EXPECT_EQ(b.global_begin, next);
    EXPECT_LE(b.row_end - b.row_begin, 4);
    EXPECT_LE(b.row_end, groups[b.group]);
    EXPECT_EQ(starts[b.group] + b.row_begin, b.global_begin);
    next += b.row_end - b.row_begin;
  }
  EXPECT_EQ(next, range.end);
  // group 0: rows 2..4 (one batch of 3); group 2: 7 rows (4 + 3); group 3: rows 0..1 (one batch)
  ASSERT_EQ(batches.size(), 4u);
  EXPECT_EQ(batches[0].row_end - batches[0].row_begin, 3);
  EXPECT_EQ(batches[3].group, 3);
}

TEST(Shard, WholeBatchesKeepEveryBatchIntactOnAnyRankCount) {
  const std::vector<int64_t> groups = {13, 0, 7, 2};
  const int64_t batch = 4;
  const auto one_rank = plan_batches({0, 22}, groups, batch);
  for (int world = 1; world <= 9; ++world) {
    std::vector<BatchSlice> dealt;
    int64_t next = 0;
    for (int r = 0; r < world; ++r) {
      const auto mine = shard_whole_batches(groups, batch, r, world);
      EXPECT_EQ(mine.begin, next) << "contiguous, world " << world;
      next = mine.end;
      for (const auto& b : plan_batches(mine, groups, batch)) dealt.push_back(b);
    }
    EXPECT_EQ(next, 22);
    ASSERT_EQ(dealt.size(), one_rank.size()) << "world " << world;
    for (size_t i = 0; i < dealt.size(); ++i) {
      EXPECT_EQ(dealt[i].global_begin, one_rank[i].global_begin);
      EXPECT_EQ(dealt[i].row_end - dealt[i].row_begin, one_rank[i].row_end - one_rank[i].row_begin);
    }
  }
}
