// Pruning's pieces a compile cannot isolate: GPTQ holding a mask, SparseGPT's
// N:M masks, the sensitivity allocation and the pattern's parsing. The
// algorithms themselves are checked against references in plain torch by
// tests/cli/test_pruning.py.
#include <torch/torch.h>

#include "prune/prune_allocation.h"
#include "prune/prune_weight.h"
#include "qforge/errors.h"
#include "quant/gptq.h"
#include "quant/observer.h"
#include "test_helpers.h"

using namespace qforge;

namespace {

torch::Tensor correlated_inputs(int64_t rows, int64_t width) {
  const auto mix = torch::randn({width, width}) / std::sqrt(static_cast<double>(width));
  return (torch::randn({rows, width}).mm(mix) + 0.1 * torch::randn({rows, width})).to(torch::kDouble);
}

double output_error(const torch::Tensor& w, const torch::Tensor& pruned, const torch::Tensor& x) {
  return x.mm((w - pruned).t().to(torch::kDouble)).square().sum().item<double>();
}

LayerPruning two_of_four(PruningMethod method) {
  LayerPruning p;
  p.method = method;
  p.n = 2;
  p.m = 4;
  p.sparsity = 0.5;
  return p;
}

}  // namespace

TEST(Pruning, GptqHoldsAMaskAndStaysOnItsGrid) {
  torch::manual_seed(3);
  const auto w = torch::randn({8, 32});
  const auto x = correlated_inputs(300, 32);
  const auto h = x.t().mm(x) / 300.0;
  const auto mask = torch::rand({8, 32}) > 0.5;
  WeightQuantSettings settings;
  settings.bits = 4;
  settings.algorithm = WeightAlgorithm::Gptq;
  SolveSparsity held;
  held.held = mask;
  const GptqResult r = gptq_quantize(w * mask, h, settings, "fc", held);
  EXPECT_TRUE(torch::equal(r.weight.masked_select(~mask), torch::zeros({(~mask).sum().item<int64_t>()})));
  EXPECT_TRUE(torch::equal(fake_quantize_weight(r.weight, r.quant, settings), r.weight));
}

TEST(Pruning, SparseGptKeepsTwoOfFourAndErrsLessThanWanda) {
  torch::manual_seed(4);
  const auto w = torch::randn({16, 64});
  const auto x = correlated_inputs(400, 64);
  const auto h = x.t().mm(x) / 400.0;
  PruningSettings settings;
  const auto sparsegpt = prune_weight(w, h, two_of_four(PruningMethod::SparseGpt), settings, "fc");
  const auto wanda = prune_weight(w, h, two_of_four(PruningMethod::Wanda), settings, "fc");
  for (const auto* p : {&sparsegpt, &wanda}) {
    EXPECT_TRUE(torch::equal(p->mask.reshape({16, 16, 4}).sum(2), torch::full({16, 16}, 2, torch::kLong)));
    EXPECT_TRUE(torch::equal(p->weight != 0, p->mask));
  }
  EXPECT_LT(output_error(w, sparsegpt.weight, x), output_error(w, wanda.weight, x));
  EXPECT_NEAR(relative_output_error(w, sparsegpt.weight, h),
              output_error(w, sparsegpt.weight, x) / x.mm(w.t().to(torch::kDouble)).square().sum().item<double>(),
              1e-9);
}

TEST(Pruning, SparsityZeroKeepsEveryWeight) {  // the sensitivity allocation's dense candidate
  const auto w = torch::randn({4, 8});
  const auto x = torch::randn({20, 8}).to(torch::kDouble);
  for (auto method : {PruningMethod::Magnitude, PruningMethod::Wanda, PruningMethod::SparseGpt}) {
    LayerPruning p;
    p.method = method;
    const auto pruned = prune_weight(w, x.t().mm(x), p, PruningSettings{}, "fc");
    EXPECT_TRUE(torch::equal(pruned.weight, w));
    EXPECT_TRUE(pruned.mask.all().item<bool>());
  }
}

TEST(Pruning, AllocationLowersTheLayerAboveTheThresholdAndRaisesAnother) {
  LayerPruning planned;
  planned.method = PruningMethod::Wanda;
  planned.sparsity = 0.5;
  const auto candidates = sparsity_candidates(planned);  // 0.5, .375, .25, .125, 0, .625, .75
  ASSERT_EQ(candidates.size(), 7u);
  // "a" errs 0.3 at 0.5 and 0.08 at 0.25; "b" errs 0.02 at 0.5 and 0.04 at 0.625 and 0.2 at 0.75.
  SparsityChoice a{"a", 100, candidates, {0.3, 0.2, 0.08, 0.04, 0.0, 0.5, 0.7}};
  SparsityChoice b{"b", 100, candidates, {0.02, 0.01, 0.005, 0.002, 0.0, 0.04, 0.2}};
  const auto allocation = allocate_within_threshold({a, b}, 0.1);
  EXPECT_DOUBLE_EQ(allocation.chosen[0].sparsity, 0.25);
  EXPECT_DOUBLE_EQ(allocation.chosen[1].sparsity, 0.625);  // one step up; the next errs 0.2
  ASSERT_EQ(allocation.notes.size(), 3u);                  // lowered, raised, and the weights still short
  EXPECT_NE(allocation.notes[0].find("layer 'a' errs 0.3000 at sparsity 50.0%"), std::string::npos)
      << allocation.notes[0];
  EXPECT_NE(allocation.notes[2].find("stay that the plan prunes"), std::string::npos) << allocation.notes[2];
}

TEST(Pruning, NmPatternsAreParsedOrRefusedByKey) {
  EXPECT_EQ(parse_sparsity_pattern("2:4", "k").m, 4);
  EXPECT_EQ(parse_sparsity_pattern("unstructured", "k").m, 0);
  for (const char* bad : {"4:2", "0:4", "2:4:8", "two:four", "2:", "2:100"})
    EXPECT_THROW(parse_sparsity_pattern(bad, "pruning_settings.pattern"), ConfigError) << bad;
}
