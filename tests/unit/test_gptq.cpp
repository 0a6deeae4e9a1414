// GPTQ's pieces that a compile cannot isolate: the exact Hessian sum and the
// errors of the solve. The solve itself is checked against a reference in
// plain torch by tests/cli/test_gptq.py.
#include <torch/torch.h>

#include "qforge/errors.h"
#include "quant/gptq.h"
#include "quant/observer.h"
#include "test_helpers.h"

using namespace qforge;

namespace {
WeightQuantSettings four_bit_channels() {
  WeightQuantSettings s;
  s.bits = 4;
  s.granularity = Granularity::Channel;
  s.algorithm = WeightAlgorithm::Gptq;
  return s;
}
}  // namespace

TEST(Gptq, HessianSumIsTheSameInAnyGroupingOfBatches) {
  torch::manual_seed(0);
  std::vector<torch::Tensor> batches;
  for (int b = 0; b < 6; ++b) batches.push_back(torch::randn({5, 3, 16}) * (b + 1));
  double max_abs = 0;
  for (const auto& b : batches) max_abs = std::max(max_abs, b.abs().max().item<double>());
  const int64_t vectors = 6 * 15;
  // One process with every batch, and three "ranks" with two each, summed after.
  HessianSum all(16, max_abs, vectors, torch::kCPU);
  for (const auto& b : batches) all.add(b);
  HessianSum parts(16, max_abs, vectors, torch::kCPU);
  for (int r = 2; r >= 0; --r) {  // any order of ranks
    HessianSum rank(16, max_abs, vectors, torch::kCPU);
    rank.add(batches[2 * r]);
    rank.add(batches[2 * r + 1]);
    parts.sums() += rank.sums();
  }
  EXPECT_TRUE(torch::equal(all.sums(), parts.sums()));
  const auto x = torch::cat(batches).reshape({-1, 16}).to(torch::kDouble);
  const auto expected = x.t().mm(x) / static_cast<double>(vectors);
  EXPECT_LT((all.hessian() - expected).abs().max().item<double>(), 1e-14 * expected.abs().max().item<double>());
}

TEST(Gptq, SolvedWeightLiesOnTheGridOfItsParameters) {
  torch::manual_seed(1);
  const auto w = torch::randn({12, 32});
  const auto x = torch::randn({200, 32}).to(torch::kDouble);
  auto settings = four_bit_channels();
  settings.granularity = Granularity::Group;
  settings.group_size = 8;
  const GptqResult r = gptq_quantize(w, x.t().mm(x) / 200.0, settings, "fc");
  ASSERT_EQ(r.quant.qparams.scale.numel(), 12 * 4);
  EXPECT_TRUE(torch::equal(fake_quantize_weight(r.weight, r.quant, settings), r.weight));
  EXPECT_FALSE(torch::equal(fake_quantize_weight(w, r.quant, settings), r.weight));  // not mere rounding
}

TEST(Gptq, AlwaysZeroInputsGiveZeroWeights) {
  torch::manual_seed(2);
  const auto w = torch::randn({4, 6});
  auto x = torch::randn({50, 6}).to(torch::kDouble);
  x.select(1, 2).zero_();
  const GptqResult r = gptq_quantize(w, x.t().mm(x), four_bit_channels(), "fc");
  EXPECT_TRUE(torch::equal(r.weight.select(1, 2), torch::zeros({4})));
}

TEST(Gptq, SingularHessianWithoutDampeningNamesTheLayer) {
  auto settings = four_bit_channels();
  settings.gptq.dampening = 0;
  const auto h = torch::ones({2, 2}, torch::kDouble);  // two identical inputs
  try {
    gptq_quantize(torch::randn({3, 2}), h, settings, "blocks.0.mlp.up");
    FAIL() << "no error";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("layer 'blocks.0.mlp.up'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("gptq.dampening"), std::string::npos) << e.what();
  }
}
