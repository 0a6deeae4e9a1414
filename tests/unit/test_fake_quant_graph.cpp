#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>

#include "graph/fake_quant_graph.h"
#include "graph/fake_quantize_learnable.h"
#include "graph/fake_quantize_rows.h"
#include "graph/inline_calls.h"
#include "graph/model.h"
#include "qforge/errors.h"
#include "test_helpers.h"

using namespace qforge;
using qforge::test::asset;
using qforge::test::count_nodes;
using qforge::test::ramp;

namespace {

// Every quantizable layer's weight, symmetric per output channel at `bits`.
std::vector<LayerFakeQuant> per_channel_weights(Model& model, int64_t bits) {
  TensorQuantSettings ws;
  ws.granularity = Granularity::Channel;
  ws.bits = bits;
  std::vector<LayerFakeQuant> layers;
  for (const auto& info : model.layers()) {
    if (!info.quantizable) continue;
    LayerFakeQuant layer;
    layer.layer = info.name;
    layer.weight = observe_weight(model.submodule(info.name).attr("weight").toTensor(), ws);
    layer.weight_range = quant_range(bits, true);
    layers.push_back(layer);
  }
  return layers;
}

}  // namespace

TEST(FakeQuantGraph, LinearMatchesTheReferenceForEveryGranularity) {
  for (Granularity g : {Granularity::Tensor, Granularity::Channel, Granularity::Group}) {
    auto model = Model::load(asset("kwargs_model.pt"));
    auto& m = model.module();
    const auto w = m.attr("fc").toModule().attr("weight").toTensor();
    const auto b = m.attr("fc").toModule().attr("bias").toTensor();
    TensorQuantSettings ws;
    ws.bits = 4;
    ws.granularity = g;
    ws.group_size = 4;
    LayerFakeQuant layer;
    layer.layer = "fc";
    layer.weight = observe_weight(w, ws);
    layer.weight_range = quant_range(4, true);
    layer.input_range = quant_range(8, false);
    layer.input = qparams_from_range(torch::tensor({-2.0}, torch::kDouble), torch::tensor({2.0}, torch::kDouble),
                                     layer.input_range, false);
    const auto x = ramp({5, 8});
    const auto before = m.forward({x}).toTensor();  // the float graph has run: the rewrite must not depend on it
    auto quantized = with_fake_quantization(m, "forward", {layer});
    const auto out = quantized.forward({x}).toTensor();
    EXPECT_TRUE(torch::equal(m.forward({x}).toTensor(), before));  // the input module is untouched
    const auto expected =
        torch::linear(fake_quantize(x, *layer.input, layer.input_range), fake_quantize_weight(w, *layer.weight, ws), b);
    EXPECT_TRUE(torch::allclose(out, expected, 1e-6, 1e-6)) << "granularity " << to_string(g);
    EXPECT_FALSE(torch::allclose(out, torch::linear(x, w, b), 1e-4, 1e-4));  // quantization did something
  }
}

TEST(FakeQuantGraph, ResnetRunsInLibTorchAndPythonWithStandardOps) {
  auto model = Model::load(asset("resnet18_traced.pt"));
  auto& m = model.module();
  const auto x = ramp({2, 3, 32, 32});
  const auto reference = m.forward({x}).toTensor();
  std::vector<LayerFakeQuant> layers = per_channel_weights(model, 8);  // int8 symmetric per output channel
  for (auto& layer : layers) {
    layer.input_range = quant_range(8, true);
    layer.input = qparams_from_range(torch::tensor({-16.0}, torch::kDouble), torch::tensor({16.0}, torch::kDouble),
                                     layer.input_range, true);
  }
  auto quantized = with_fake_quantization(m, "forward", layers);
  EXPECT_EQ(count_nodes(quantized, "aten::fake_quantize_per_channel_affine"), 21);
  EXPECT_EQ(count_nodes(quantized, "aten::fake_quantize_per_tensor_affine"), 21);
  const auto out = quantized.forward({x}).toTensor();
  const double sqnr = sqnr_db(reference, out);
  EXPECT_GT(sqnr, 10.0);  // random weights, one fixed activation range for every layer
  EXPECT_LT(sqnr, 80.0);  // quantized, not the float model
  EXPECT_TRUE(torch::equal(m.forward({x}).toTensor(), reference));  // the input module is untouched

  // Saved, it loads and runs in Python's torch with the same outputs (up to
  // convolution kernels that sum in another order: a rare activation then
  // rounds to the neighbouring code, hence a relative rather than exact bound).
  const std::string dir = ::testing::TempDir();
  quantized.save(dir + "/fq_resnet18.pt");
  const auto expected = out.contiguous();
  std::ofstream(dir + "/fq_expected.bin", std::ios::binary)
      .write(static_cast<const char*>(expected.data_ptr()), static_cast<std::streamsize>(expected.nbytes()));
  const std::string script =
      "import torch; m = torch.jit.load('" + dir +
      "/fq_resnet18.pt'); "
      "x = torch.linspace(-2, 2, 2*3*32*32).reshape(2, 3, 32, 32); y = m(x).detach().reshape(-1); "
      "e = torch.frombuffer(bytearray(open('" +
      dir +
      "/fq_expected.bin', 'rb').read()), dtype=torch.float32); "
      "r = ((y - e).norm() / e.norm()).item(); print('relative difference', r); assert r < 1e-3, r";
  const std::string command = qforge::test::python() + " -c \"" + script + "\"";
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
}

// Fine-tuning's own per-channel op must give ATen's values and gradients
// exactly: on ties (round half to even, odd zero points), inside the grid, on
// its edges and clamped beyond them, at every width, on a CPU and on a GPU
// (its own kernel there).
TEST(FakeQuantizeRows, ValuesAndGradientsAreATens) {
  torch::manual_seed(5);
  std::vector<torch::Device> devices = {torch::kCPU};
  if (torch::cuda::is_available()) devices.emplace_back(torch::kCUDA);
  for (const torch::Device& device : devices)
    for (int64_t bits : {4, 8}) {
      for (bool symmetric : {true, false}) {
        const QuantRange range = quant_range(bits, symmetric);
        const auto scale = torch::rand({6}) * 0.1 + 0.01;
        const auto zero_point =
            symmetric ? torch::zeros({6}, torch::kInt) : torch::randint(range.qmin, range.qmax + 1, {6}, torch::kInt);
        // Half-integer codes (ties), whole codes, random values and far outliers, per row.
        const auto codes = torch::arange(-300, 300, torch::kFloat) / 2;
        const auto on_ties = codes.unsqueeze(0) * scale.unsqueeze(1);
        const auto random = torch::randn({6, 400}) * scale.unsqueeze(1) * (range.qmax - range.qmin) / 2;
        const auto x = torch::cat({on_ties, random}, 1).reshape({6, 2, -1}).to(device);
        const auto s = scale.to(device), z = zero_point.to(device);
        const auto ours_x = x.clone().requires_grad_(), aten_x = x.clone().requires_grad_();
        const auto ours = fake_quantize_rows(ours_x, s, z, 0, range.qmin, range.qmax);
        const auto aten = torch::fake_quantize_per_channel_affine(aten_x, s, z, 0, range.qmin, range.qmax);
        const std::string what = device.str() + ", " + std::to_string(bits) + " bits" + (symmetric ? " symmetric" : "");
        EXPECT_TRUE(torch::equal(ours, aten)) << what;
        const auto upstream = torch::randn(x.sizes()).to(device);
        ours.backward(upstream);
        aten.backward(upstream);
        EXPECT_TRUE(torch::equal(ours_x.grad(), aten_x.grad())) << what;
        EXPECT_TRUE((ours_x.grad() == 0).any().item<bool>());  // some values were clamped
      }
    }
}

// Per tensor and per channel (axis 0, and axis 1 through the composition),
// on the CPU and on a GPU where there is one: ATen's learnable op's values and
// x gradients exactly, its scale gradient up to the order of the sum. The
// gradients leave out exact ties: ATen's backward rounds z + x/s where its
// forward rounds x/s and adds z, which differ at a tie for an odd z; qforge's
// backward follows the forward.
TEST(FakeQuantizeLearnable, ValuesAndGradientsAreATens) {
  torch::manual_seed(6);
  std::vector<torch::Device> devices = {torch::kCPU};
  if (torch::cuda::is_available()) devices.emplace_back(torch::kCUDA);
  for (const torch::Device& device : devices)
    for (int64_t axis : {-1, 0, 1})
      for (bool symmetric : {true, false}) {
        const int64_t bits = symmetric ? 4 : 8;
        const QuantRange range = quant_range(bits, symmetric);
        const int64_t channels = axis < 0 ? 1 : 6;
        const auto scale = torch::rand({channels}) * 0.1 + 0.01;
        const auto zero_point = symmetric ? torch::zeros({channels}, torch::kInt)
                                          : torch::randint(range.qmin, range.qmax + 1, {channels}, torch::kInt);
        // Ties, whole codes, random values and far outliers in every channel.
        const auto codes = torch::arange(-300, 300, torch::kFloat) / 2;
        const auto on_ties = codes.unsqueeze(0) * scale.unsqueeze(1);
        const auto random = torch::randn({channels, 400}) * scale.unsqueeze(1) * (range.qmax - range.qmin) / 2;
        auto x = torch::cat({on_ties.expand({channels, -1}), random}, 1).reshape({channels, 2, -1});
        auto off_ties = torch::cat({torch::zeros_like(on_ties), torch::ones_like(random)}, 1).reshape(x.sizes());
        if (axis == 1) {  // channels along axis 1
          x = x.transpose(0, 1).contiguous();
          off_ties = off_ties.transpose(0, 1).contiguous();
        }
        x = x.to(device);
        const auto s = scale.to(device), z = zero_point.to(device);
        const auto ours_x = x.clone().requires_grad_(), aten_x = x.clone().requires_grad_();
        const auto ours_s = s.clone().requires_grad_(), aten_s = s.clone().requires_grad_();
        const auto ours = fake_quantize_learnable(ours_x, ours_s, z, axis, range.qmin, range.qmax);
        const auto aten = axis < 0 ? torch::_fake_quantize_learnable_per_tensor_affine(
                                         aten_x, aten_s, z.to(torch::kFloat), range.qmin, range.qmax, 1.0)
                                   : torch::_fake_quantize_learnable_per_channel_affine(
                                         aten_x, aten_s, z.to(torch::kFloat), axis, range.qmin, range.qmax, 1.0);
        const std::string what = device.str() + ", axis " + std::to_string(axis) + (symmetric ? " symmetric" : "");
        EXPECT_TRUE(torch::equal(ours, aten)) << what;
        const auto upstream = (torch::randn(x.sizes()) * off_ties).to(device);
        ours.backward(upstream);
        aten.backward(upstream);
        EXPECT_TRUE(torch::equal(ours_x.grad(), aten_x.grad())) << what;
        const auto clamped = (ours_x.grad() == 0).logical_and(upstream != 0);
        EXPECT_TRUE(clamped.any().item<bool>()) << what << ": some values were clamped";
        EXPECT_EQ(ours_s.grad().sizes(), ours_s.sizes()) << what;
        EXPECT_TRUE(torch::allclose(ours_s.grad(), aten_s.grad(), 1e-5, 1e-6)) << what << "\n"
                                                                               << ours_s.grad() << "\n"
                                                                               << aten_s.grad();
      }
}

TEST(FakeQuantGraph, TrainingGraphComputesWithTheSameNumbers) {
  auto model = Model::load(asset("resnet18_traced.pt"));
  auto& m = model.module();
  const std::vector<LayerFakeQuant> layers = per_channel_weights(model, 4);
  auto saved = with_fake_quantization(m, "forward", layers);
  auto training = with_fake_quantization(m, "forward", layers, FakeQuantOps::Training);
  EXPECT_EQ(count_nodes(training, "aten::fake_quantize_per_channel_affine"), 0);
  EXPECT_EQ(count_nodes(training, "qforge::fake_quantize_rows"), 21);
  const auto x = ramp({2, 3, 32, 32});
  EXPECT_TRUE(torch::equal(training.forward({x}).toTensor(), saved.forward({x}).toTensor()));
}

TEST(FakeQuantGraph, UnknownLayerIsNamed) {
  auto model = Model::load(asset("kwargs_model.pt"));
  LayerFakeQuant layer;
  layer.layer = "fc2";
  qforge::test::expect_error<ModelError>([&] { with_fake_quantization(model.module(), "forward", {layer}); },
                                         {"layer 'fc2'"});
}

// LibTorch caches each method's graph on its first run; a model first run
// unoptimized (as compile() runs it) caches graphs that still call submodules.
TEST(GraphInlining, NoCallIsLeftAfterTheModelRanUnoptimized) {
  auto model = Model::load(asset("resnet18_traced.pt"));
  auto& m = model.module();
  {
    const torch::jit::GraphOptimizerEnabledGuard unoptimized(false);
    m.forward({ramp({1, 3, 32, 32})});
  }
  auto graph = torch::jit::toGraphFunction(m.get_method("forward").function()).graph()->copy();
  inline_calls(*graph);
  std::vector<std::string> calls;
  const std::function<void(const torch::jit::Block*)> find_calls = [&](const torch::jit::Block* block) {
    for (const auto* n : block->nodes()) {
      if (n->kind() == c10::prim::CallMethod || n->kind() == c10::prim::CallFunction)
        calls.push_back(n->kind().toQualString());
      for (const auto* b : n->blocks()) find_calls(b);
    }
  };
  find_calls(graph->block());
  EXPECT_TRUE(calls.empty()) << calls.size() << " calls left, the first a " << calls.front();
  int convolutions = 0;
  for (const auto* n : graph->nodes())
    convolutions += n->kind() == c10::aten::_convolution || n->kind() == c10::aten::conv2d;
  EXPECT_EQ(convolutions, 20);  // ResNet-18's 20 convolutions, each inlined once
}

TEST(FakeQuantGraph, LayersReadingOneTensorShareItsObservation) {
  auto model = Model::load(asset("resnet18_traced.pt"));
  std::vector<ObservedTensor> points;
  for (const auto& info : model.layers())
    if (info.quantizable) points.push_back({info.name, false});
  std::vector<int64_t> served_by;
  const auto observed = with_observers(model.module(), "forward", points, &served_by);
  // A block's first convolution and its downsample read the block's input, in layers 2 to 4.
  EXPECT_EQ(count_nodes(observed, "qforge::observe"), static_cast<int>(points.size()) - 3);
  for (size_t i = 0; i < points.size(); ++i) {
    const std::string& name = points[i].layer;
    const auto downsample = name.find(".downsample.0");
    const std::string first = downsample == std::string::npos ? name : name.substr(0, downsample) + ".conv1";
    const auto expected = std::find_if(points.begin(), points.end(), [&](const auto& p) { return p.layer == first; });
    EXPECT_EQ(served_by[i], expected - points.begin()) << name;
  }
  EXPECT_EQ(count_nodes(with_observers(model.module(), "forward", points), "qforge::observe"),
            static_cast<int>(points.size()));  // without served_by, one observation each
}

TEST(FakeQuantGraph, PlainLoraAddsBesideLinearLayersAndAdaptsTheOtherWeights) {
  auto model = Model::load(asset("resnet18_traced.pt"));
  auto& m = model.module();
  torch::manual_seed(3);
  std::vector<LayerFakeQuant> adapters, merged;
  int64_t linear = 0, other = 0;
  for (const auto& info : model.layers()) {
    if (!info.quantizable) continue;
    const auto w = model.submodule(info.name).attr("weight").toTensor();
    const int64_t rank = 4, inputs = w.numel() / w.size(0);
    const LoraAdapter lora{torch::randn({rank, inputs}) * 0.1, torch::randn({w.size(0), rank}) * 0.1, 0.5,
                           torch::tensor({1.0f, 0.0f, 2.0f, 1.0f})};  // a dropout mask: one rank dropped
    LayerFakeQuant with_adapter, with_merged;
    with_adapter.layer = with_merged.layer = info.name;
    with_adapter.lora = lora;
    with_merged.weight_value = adapted_weight(w, lora);
    adapters.push_back(with_adapter);
    merged.push_back(with_merged);
    (w.dim() == 2 ? linear : other) += 1;
  }
  ASSERT_EQ(linear, 1);  // fc
  const auto x = ramp({2, 3, 32, 32});
  auto student = with_fake_quantization(m, "forward", adapters, FakeQuantOps::Training);
  auto reference = with_fake_quantization(m, "forward", merged);
  EXPECT_TRUE(torch::allclose(student.forward({x}).toTensor(), reference.forward({x}).toTensor(), 1e-4, 1e-4));
  // fc computes x·Aᵀ·(B·mask)ᵀ beside its frozen weight; the convolutions adapt theirs.
  EXPECT_EQ(count_nodes(student, "aten::linear"), 3);
  EXPECT_EQ(count_nodes(student, "aten::matmul"), other);
}
