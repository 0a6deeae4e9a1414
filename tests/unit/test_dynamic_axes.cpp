#include "graph/dynamic_axes.h"
#include "qforge/errors.h"
#include "test_helpers.h"

using namespace qforge;

TEST(DynamicAxes, SeedExamples) {
  // Dynamic batch: (1,3,224,224) vs (2,3,224,224) -> axis 0.
  auto axes = find_dynamic_axes({"x"}, {{{1, 3, 224, 224}}, {{2, 3, 224, 224}}});
  EXPECT_EQ(axes[0].dynamic, (std::vector<int64_t>{0}));
  // Dynamic spatial: (1,3,224,224) vs (1,3,320,640) -> axes 2, 3.
  axes = find_dynamic_axes({"x"}, {{{1, 3, 224, 224}}, {{1, 3, 320, 640}}});
  EXPECT_EQ(axes[0].dynamic, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(axes[0].max_shape, (std::vector<int64_t>{1, 3, 320, 640}));
  // Batch and spatial together.
  axes = find_dynamic_axes({"x"}, {{{1, 3, 224, 224}}, {{2, 3, 320, 640}}});
  EXPECT_EQ(axes[0].dynamic, (std::vector<int64_t>{0, 2, 3}));
}

TEST(DynamicAxes, SingleSampleIsStaticAndInputsAreIndependent) {
  auto axes = find_dynamic_axes({"ids", "mask"}, {{{1, 16}, {1, 16}}});
  EXPECT_TRUE(axes[0].dynamic.empty());
  axes = find_dynamic_axes({"ids", "mask"}, {{{1, 1}, {1, 8}}, {{1, 256}, {1, 8}}});
  EXPECT_EQ(axes[0].dynamic, (std::vector<int64_t>{1}));
  EXPECT_TRUE(axes[1].dynamic.empty());
}

TEST(DynamicAxes, DifferentNumberOfAxesIsAnError) {
  qforge::test::expect_error<ModelError>(
      [] {
        find_dynamic_axes({"x"}, {{{1, 3}}, {{1, 3, 4}}});
      },
      {"input 'x'", "sample 1"});
}
