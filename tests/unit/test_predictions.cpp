#include <gtest/gtest.h>

#include "metrics/predictions.h"

using namespace qforge;

TEST(Predictions, ClassifierAndLanguageModelOutputsGiveOnePredictionPerRowOrPosition) {
  const auto classifier = at::randn({4, 10});
  EXPECT_EQ(prediction_logits(classifier, 4)->sizes(), at::IntArrayRef({4, 10}));
  const auto lm = at::randn({2, 5, 7});
  EXPECT_EQ(prediction_logits(lm, 2)->sizes(), at::IntArrayRef({10, 7}));
  EXPECT_FALSE(prediction_logits(at::randn({4}), 4));                // one number per row: no classes
  EXPECT_FALSE(prediction_logits(at::randn({3, 10}), 4));            // other rows
  EXPECT_FALSE(prediction_logits(at::ones({4, 10}, at::kLong), 4));  // not logits
  EXPECT_FALSE(prediction_logits(c10::IValue(3), 4));
}

TEST(Predictions, LabelsNeedTheOutputsShapeLessClassesAndWholeNumbers) {
  const auto lm = at::randn({2, 5, 7});
  const auto ids = at::arange(10, at::kInt).reshape({2, 5}) % 7;
  EXPECT_TRUE(at::equal(*class_labels(ids, lm), ids.reshape({-1}).to(at::kLong)));
  EXPECT_TRUE(
      at::equal(*class_labels(ids.to(at::kFloat), lm), ids.reshape({-1}).to(at::kLong)));  // class ids in floats
  EXPECT_FALSE(class_labels(ids.to(at::kFloat) + 0.5, lm));  // regression targets are not classes
  EXPECT_FALSE(class_labels(ids.reshape({10}), lm));         // one label per row of a sequence output
  EXPECT_FALSE(class_labels(at::Tensor(), lm));
}
