#include <torch/torch.h>

#include <map>

#include "graph/input_scales.h"
#include "graph/model.h"
#include "test_helpers.h"

using namespace qforge;
using qforge::test::asset;

namespace {

const std::vector<std::string> kLinears = {"blocks.0.q",    "blocks.0.k",    "blocks.0.v",    "blocks.0.o",
                                           "blocks.0.gate", "blocks.0.up",   "blocks.0.down", "blocks.1.q",
                                           "blocks.1.k",    "blocks.1.v",    "blocks.1.o",    "blocks.1.gate",
                                           "blocks.1.up",   "blocks.1.down", "proj",          "head"};

std::map<std::string, InputGroup> by_first_layer(const InputGroups& found) {
  std::map<std::string, InputGroup> out;
  for (const auto& g : found.groups) out[g.layers.front()] = g;
  return out;
}

}  // namespace

TEST(InputScales, GroupsLayersReadingOneInputAndFindsWhereTheDivisionFolds) {
  auto model = Model::load(asset("small_decoder_scripted.pt"));
  const auto found = input_groups(model.module(), "forward", kLinears);
  EXPECT_TRUE(found.refused.empty());
  const auto groups = by_first_layer(found);
  ASSERT_EQ(groups.size(), 10u);  // per block: qkv, o, gate/up, down; then proj, head
  const auto& qkv = groups.at("blocks.0.q");
  EXPECT_EQ(qkv.layers, (std::vector<std::string>{"blocks.0.q", "blocks.0.k", "blocks.0.v"}));
  EXPECT_EQ(qkv.divided_params, std::vector<std::string>{"blocks.0.attn_norm.weight"});  // RMSNorm's weight
  EXPECT_EQ(groups.at("blocks.0.o").divided_in, "explicit multiply");                    // after attention
  EXPECT_EQ(groups.at("blocks.0.gate").divided_params,
            (std::vector<std::string>{"blocks.0.mlp_norm.weight", "blocks.0.mlp_norm.bias"}));  // LayerNorm
  EXPECT_EQ(groups.at("blocks.0.down").divided_params,
            (std::vector<std::string>{"blocks.0.up.weight", "blocks.0.up.bias"}));  // SwiGLU's linear operand
  EXPECT_EQ(groups.at("head").divided_params, (std::vector<std::string>{"proj.weight", "proj.bias"}));
  EXPECT_EQ(groups.at("proj").divided_in, "norm");
}

TEST(InputScales, ScaledModelComputesWhatTheFloatModelDoes) {
  torch::NoGradGuard no_grad;
  auto model = Model::load(asset("small_decoder_scripted.pt"));
  const auto found = input_groups(model.module(), "forward", kLinears);
  torch::manual_seed(3);
  std::vector<at::Tensor> scales;
  for (const auto& g : found.groups) scales.push_back(torch::exp(torch::randn({g.channels}, torch::kDouble)));
  const auto scaled = with_input_scales(model.module(), "forward", found.groups, scales);
  const auto ids = torch::randint(0, 100, {3, 16});
  const auto reference = model.module().forward({ids}).toTensor();
  const auto out = torch::jit::Module(scaled).forward({ids}).toTensor();
  EXPECT_LT(((out - reference).abs().max() / reference.abs().max()).item<double>(), 1e-5);
  // Every layer's weight changed, and the input model is untouched.
  for (const auto& layer : kLinears) {
    const auto before = submodule(model.module(), layer, "m").attr("weight").toTensor();
    EXPECT_FALSE(torch::equal(before, submodule(scaled, layer, "m").attr("weight").toTensor())) << layer;
  }
  EXPECT_TRUE(torch::equal(model.module().forward({ids}).toTensor(), reference));
}

TEST(InputScales, InputsWithNothingToFoldIntoAreDividedExplicitly) {
  torch::NoGradGuard no_grad;
  auto model = Model::load(asset("wide_mlp_traced.pt"));
  // fc1 reads the model's input, fc2 a GELU, head a residual sum: no parameter can take the division.
  const auto found = input_groups(model.module(), "forward", {"fc1", "fc2", "head"});
  EXPECT_TRUE(found.refused.empty());
  ASSERT_EQ(found.groups.size(), 3u);
  std::vector<at::Tensor> scales;
  for (const auto& g : found.groups) {
    EXPECT_EQ(g.divided_in, "explicit multiply") << g.layers.front();
    scales.push_back(torch::linspace(0.5, 2.0, g.channels, torch::kDouble));
  }
  const auto scaled = with_input_scales(model.module(), "forward", found.groups, scales);
  const auto x = torch::randn({4, 64});
  const auto reference = model.module().forward({x}).toTensor();
  const auto out = torch::jit::Module(scaled).forward({x}).toTensor();
  EXPECT_LT(((out - reference).abs().max() / reference.abs().max()).item<double>(), 1e-5);
}
