#include <gtest/gtest.h>
#include <torch/torch.h>

#include "finetune/teacher_cache.h"

using namespace qforge;

namespace {

BatchSlice slice(int64_t first, int64_t rows) { return {0, first, first + rows, first}; }

Batch batch_of(const BatchSlice& s) {
  Batch b;
  b.global_begin = s.global_begin;
  b.inputs.push_back(torch::arange(s.row_begin, s.row_end, torch::kFloat));
  return b;
}

// Serves `order` through the cache; counts the teacher's forward passes.
struct Served {
  int64_t computed = 0;
  std::vector<at::Tensor> outputs;
};
Served serve(TeacherCache& cache, const std::vector<BatchSlice>& order) {
  Served out;
  for (const auto& s : order) {
    const Batch b = batch_of(s);
    out.outputs.push_back(cache
                              .outputs(b,
                                       [&] {
                                         ++out.computed;
                                         return c10::IValue(b.inputs[0] * 2);  // 4 bytes per row
                                       })
                              .toTensor());
  }
  return out;
}

}  // namespace

TEST(TeacherCache, ComputesEachRecurringBatchOnceAndFreesItAfterItsLastUse) {
  const BatchSlice a = slice(0, 4), b = slice(4, 4), c = slice(8, 2);
  const std::vector<BatchSlice> plan = {a, b, a, b, a, c};
  TeacherCache cache(plan, 1 << 20);
  const Served served = serve(cache, plan);
  EXPECT_EQ(served.computed, 3);  // a, b and c once
  EXPECT_EQ(cache.reused(), 3);
  EXPECT_EQ(cache.kept_bytes(), 0) << "nothing is held after its last use";
  for (size_t i = 0; i < plan.size(); ++i)
    EXPECT_TRUE(torch::equal(served.outputs[i], batch_of(plan[i]).inputs[0] * 2)) << "batch " << i;
}

TEST(TeacherCache, KeepsOnlyWhatFitsTheBudgetAndNothingThatDoesNotRecur) {
  const BatchSlice a = slice(0, 4), b = slice(4, 4), c = slice(8, 4);
  const std::vector<BatchSlice> plan = {a, b, c, a, b};
  TeacherCache cache(plan, 16);  // a's 16 bytes; b does not fit beside them
  const Served served = serve(cache, plan);
  EXPECT_EQ(served.computed, 4);
  EXPECT_EQ(cache.reused(), 1);
  TeacherCache none(plan, 0);
  EXPECT_EQ(serve(none, plan).computed, 5);
  EXPECT_EQ(none.reused(), 0);
}

TEST(TeacherCache, BatchesOfOtherRowsAreNotTakenForEachOther) {
  // The same first row with another row count, as when an epoch's batches shift.
  const std::vector<BatchSlice> plan = {slice(0, 4), slice(0, 3), slice(0, 4)};
  TeacherCache cache(plan, 1 << 20);
  const Served served = serve(cache, plan);
  EXPECT_EQ(served.computed, 2);
  EXPECT_EQ(served.outputs[1].numel(), 3);
  EXPECT_TRUE(torch::equal(served.outputs[2], served.outputs[0]));
}

TEST(TeacherCache, TakeAndKeepServeAsOutputsDoes) {
  // The two-part use of CUDA graphs: outputs computed into tensors that are
  // overwritten later are kept as copies, only while the batch recurs.
  const BatchSlice a = slice(0, 4), b = slice(4, 2);
  const std::vector<BatchSlice> plan = {a, b, a, a};
  TeacherCache cache(plan, 1 << 20);
  int64_t computed = 0;
  for (const auto& s : plan) {
    const Batch batch = batch_of(s);
    const std::optional<c10::IValue> kept = cache.take(batch);
    if (kept) {
      EXPECT_TRUE(torch::equal(kept->toTensor(), batch.inputs[0] * 2));
      continue;
    }
    ++computed;
    EXPECT_EQ(cache.recurs(batch), s.global_begin == 0) << "only a comes round again";
    if (cache.recurs(batch)) cache.keep(batch, c10::IValue(batch.inputs[0] * 2));
  }
  EXPECT_EQ(computed, 2);
  EXPECT_EQ(cache.reused(), 2);
  EXPECT_EQ(cache.kept_bytes(), 0) << "a is let go after its last use";
}
