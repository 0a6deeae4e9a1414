#include <torch/torch.h>

#include "graph/block_segments.h"
#include "graph/fake_quant_graph.h"
#include "graph/model.h"
#include "graph/observe_op.h"
#include "test_helpers.h"

using namespace qforge;
using qforge::test::asset;

namespace {

const std::vector<std::string> kBlocks = {"layers.0", "layers.1", "layers.2"};

// Every input of `layers`, in the order `run` makes them.
std::vector<at::Tensor> layer_inputs(const torch::jit::Module& module, const std::string& method,
                                     const std::vector<std::string>& layers,
                                     const std::function<void(torch::jit::Module&)>& run) {
  torch::jit::Module observed = with_observers(module, method, layers);
  std::vector<at::Tensor> seen;
  ObserveScope scope([&](int64_t, const at::Tensor& x) { seen.push_back(x.clone()); });
  run(observed);
  return seen;
}

class BlockSegmentsTest : public ::testing::TestWithParam<std::string> {};

}  // namespace

// The segments run one after another compute the method, bit for bit.
TEST_P(BlockSegmentsTest, ChainedSegmentsComputeTheMethod) {
  torch::NoGradGuard no_grad;
  auto model = Model::load(asset(GetParam()));
  auto split = split_at_blocks(model.module(), "forward", kBlocks);
  ASSERT_TRUE(std::holds_alternative<BlockSegments>(split)) << std::get<std::string>(split);
  auto& segments = std::get<BlockSegments>(split);
  ASSERT_EQ(segments.methods.size(), 4u);
  EXPECT_EQ(segments.segment_of_layer.at("layers.0.attn.q"), 0u);
  EXPECT_EQ(segments.segment_of_layer.at("layers.2.mlp.down"), 2u);
  EXPECT_EQ(segments.segment_of_layer.at("head"), 3u);
  const auto ids = torch::randint(0, 100, {2, 12});
  c10::IValue passed = segments.module.get_method(segments.methods[0])({ids});
  for (size_t j = 1; j < segments.methods.size(); ++j) {
    const auto args = passed.toTupleRef().elements().vec();
    // Blocks 1 and 2 get the hidden states, cos, sin and the mask; the head only the hidden states.
    EXPECT_EQ(args.size(), j < 3 ? 4u : 1u) << "segment " << j;
    passed = segments.module.get_method(segments.methods[j])(args);
  }
  EXPECT_TRUE(torch::equal(passed.toTensor(), model.module().forward({ids}).toTensor()));
}

// What sequential calibration sees in block j with nothing quantized: the
// float model's inputs of that block's layers, exactly.
TEST_P(BlockSegmentsTest, KeptInputsGiveTheFloatModelsBlockInputs) {
  torch::NoGradGuard no_grad;
  auto model = Model::load(asset(GetParam()));
  auto segments = std::get<BlockSegments>(split_at_blocks(model.module(), "forward", kBlocks));
  const auto ids = torch::randint(0, 100, {3, 12});
  c10::IValue passed;
  for (size_t j = 0; j < kBlocks.size(); ++j) {
    const std::vector<std::string> layers = {kBlocks[j] + ".attn.q", kBlocks[j] + ".mlp.down"};
    const auto expected =
        layer_inputs(model.module(), "forward", layers, [&](torch::jit::Module& m) { m.forward({ids}); });
    const std::vector<c10::IValue> args = j == 0 ? std::vector<c10::IValue>{ids} : passed.toTupleRef().elements().vec();
    const auto seen = layer_inputs(segments.module, segments.methods[j], layers,
                                   [&](torch::jit::Module& m) { m.get_method(segments.methods[j])(args); });
    ASSERT_EQ(seen.size(), expected.size());
    for (size_t k = 0; k < seen.size(); ++k) EXPECT_TRUE(torch::equal(seen[k], expected[k])) << layers[k];
    passed = segments.module.get_method(segments.methods[j])(args);
  }
}

INSTANTIATE_TEST_SUITE_P(ScriptedAndTraced, BlockSegmentsTest,
                         ::testing::Values("llama_decoder_scripted.pt", "llama_decoder_traced.pt"));

// Blocks in an nn.Sequential: its forward is inlined to reach their calls.
TEST(BlockSegments, CutsTheBlocksOfASequential) {
  torch::NoGradGuard no_grad;
  auto model = Model::load(asset("small_decoder_scripted.pt"));
  auto split = split_at_blocks(model.module(), "forward", {"blocks.0", "blocks.1"});
  ASSERT_TRUE(std::holds_alternative<BlockSegments>(split)) << std::get<std::string>(split);
  auto& segments = std::get<BlockSegments>(split);
  const auto ids = torch::randint(0, 100, {2, 12});
  c10::IValue passed = segments.module.get_method(segments.methods[0])({ids});
  for (size_t j = 1; j < segments.methods.size(); ++j)
    passed = segments.module.get_method(segments.methods[j])(passed.toTupleRef().elements().vec());
  EXPECT_TRUE(torch::equal(passed.toTensor(), model.module().forward({ids}).toTensor()));
}

// A block the method never calls as a module cannot be cut at: the reason names it.
TEST(BlockSegments, ExplainsWhyAMethodCannotBeCut) {
  auto model = Model::load(asset("llama_decoder_scripted.pt"));
  const auto split = split_at_blocks(model.module(), "forward", {"layers.0", "layers.0.attn.q", "layers.2"});
  ASSERT_TRUE(std::holds_alternative<std::string>(split));
  EXPECT_NE(std::get<std::string>(split).find("'layers.0.attn.q' is not called as a module"), std::string::npos)
      << std::get<std::string>(split);
  const auto reversed = split_at_blocks(model.module(), "forward", {"layers.1", "layers.0"});
  ASSERT_TRUE(std::holds_alternative<std::string>(reversed));
  EXPECT_NE(std::get<std::string>(reversed).find("called before"), std::string::npos);
}
