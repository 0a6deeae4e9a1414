#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <limits>
#include <map>
#include <vector>

#include "graph/fake_quant_graph.h"
#include "graph/model.h"
#include "graph/observe_op.h"
#include "test_helpers.h"

using namespace qforge;
using qforge::test::asset;
using qforge::test::count_nodes;
using qforge::test::ramp;

namespace {

using Observations = std::map<int64_t, std::vector<torch::Tensor>>;

// What each point observes over one forward, and the forward's result.
std::pair<Observations, torch::Tensor> observe_forward(torch::jit::Module& observed, const torch::Tensor& x) {
  Observations seen;
  ObserveScope scope([&](int64_t point, const at::Tensor& t) { seen[point].push_back(t.clone()); });
  torch::NoGradGuard no_grad;
  const torch::Tensor y = observed.forward({x.clone()}).toTensor();
  return {seen, y};
}

void expect_same_observations(const Observations& fused, const Observations& apart) {
  ASSERT_EQ(fused.size(), apart.size());
  for (const auto& [point, tensors] : apart) {
    ASSERT_EQ(fused.at(point).size(), tensors.size()) << "point " << point;
    for (size_t k = 0; k < tensors.size(); ++k) EXPECT_TRUE(fused.at(point)[k].equal(tensors[k])) << "point " << point;
  }
}

torch::jit::Module linear_layer(int64_t width, int64_t seed) {
  torch::manual_seed(seed);
  torch::jit::Module layer("Layer" + std::to_string(seed));
  layer.register_parameter("weight", torch::randn({width, width}), false);
  return layer;
}

// ReLUs whose result a layer reads right away, after an in-place write, and
// inside an if.
torch::jit::Module relus_in_every_position() {
  torch::jit::Module m("Relus");
  for (int k = 1; k <= 4; ++k) m.register_module("fc" + std::to_string(k), linear_layer(8, k));
  m.define(R"(
def forward(self, x):
    a = torch.relu(x)
    b = torch.relu_(torch.linear(a, self.fc1.weight))
    b.add_(-0.5)
    c = torch.relu(torch.linear(b, self.fc2.weight))
    if bool(c.sum() > 0):
        d = torch.linear(c, self.fc3.weight)
    else:
        d = c
    e = torch.relu_(d)
    return torch.linear(e, self.fc4.weight) + torch.linear(e, self.fc4.weight)
)");
  m.eval();
  return m;
}

}  // namespace

TEST(FuseObservations, ReluObservesWhatNothingChangesBeforeItsReader) {
  torch::jit::Module m = relus_in_every_position();
  const std::vector<ObservedTensor> points = {{"fc1", false}, {"fc2", false}, {"fc3", false}, {"fc4", false}};
  auto fused = with_observers(m, "forward", points, nullptr, ObserveFusion::IntoClamps);
  auto apart = with_observers(m, "forward", points);
  // fc1's input and fc4's (read twice: one ReLU, two observations); fc2's
  // input changes after its ReLU, fc3 reads inside an if.
  EXPECT_EQ(count_nodes(fused, "qforge::observed_clamp"), 2);
  EXPECT_EQ(count_nodes(fused, "qforge::observe"), 2);
  EXPECT_EQ(count_nodes(apart, "qforge::observed_clamp"), 0);
  EXPECT_EQ(count_nodes(apart, "qforge::observe"), 5);
  const torch::Tensor x = ramp({3, 8});
  const auto [fused_seen, fused_y] = observe_forward(fused, x);
  const auto [apart_seen, apart_y] = observe_forward(apart, x);
  expect_same_observations(fused_seen, apart_seen);
  EXPECT_EQ(fused_seen.at(3).size(), 2u);
  EXPECT_TRUE(fused_y.equal(apart_y));
  EXPECT_TRUE(fused_y.equal(m.forward({x}).toTensor()));
}

// Observed with the clamps observing (each observing one site) and apart:
// the same tensors at every point and the same result.
void expect_clamps_observe(const std::string& model_file, int observing_clamps) {
  auto model = Model::load(asset(model_file));
  std::vector<ObservedTensor> points;
  for (const auto& info : model.layers())
    if (info.quantizable) points.push_back({info.name, false});
  std::vector<int64_t> served_by;
  auto fused = with_observers(model.module(), "forward", points, &served_by, ObserveFusion::IntoClamps);
  auto apart = with_observers(model.module(), "forward", points, &served_by);
  EXPECT_EQ(count_nodes(fused, "qforge::observed_clamp"), observing_clamps);
  EXPECT_EQ(count_nodes(fused, "qforge::observe") + observing_clamps, count_nodes(apart, "qforge::observe"));
  const torch::Tensor x = ramp({2, 3, 32, 32});
  const auto [fused_seen, fused_y] = observe_forward(fused, x);
  const auto [apart_seen, apart_y] = observe_forward(apart, x);
  expect_same_observations(fused_seen, apart_seen);
  EXPECT_TRUE(fused_y.equal(apart_y));
}

// Observations read beside the computing stream on a GPU: each op says
// whether the graph writes its tensor in place after it, which such a read
// would race.
TEST(FuseObservations, OpsSayWhetherTheGraphWritesTheirTensorAfterThem) {
  torch::jit::Module m("Writes");
  for (int k = 1; k <= 4; ++k) m.register_module("fc" + std::to_string(k), linear_layer(8, k));
  m.define(R"(
def forward(self, x):
    a = torch.relu_(torch.linear(x, self.fc1.weight))
    b = torch.linear(a, self.fc2.weight)
    c = torch.linear(b, self.fc3.weight)
    b.mul_(2.0)
    d = b + c
    e = d
    for i in range(2):
        d.add_(1.0)
        e = torch.linear(d, self.fc4.weight)
    return e
)");
  m.eval();
  const std::vector<ObservedTensor> points = {{"fc2", false}, {"fc3", false}, {"fc1", true}, {"fc4", false}};
  for (const auto fusion : {ObserveFusion::IntoClamps, ObserveFusion::None}) {
    auto observed = with_observers(m, "forward", points, nullptr, fusion);
    std::map<int64_t, bool> written;
    ObserveScope scope(ObservationSink([&](const Observation& o) { written[o.point] = o.written_later; }));
    torch::NoGradGuard no_grad;
    observed.forward({ramp({3, 8})});
    // fc2 reads the ReLU's result, which its own op wrote (relu_) and
    // nothing else does; fc3 reads b, which mul_ writes after; fc1's output
    // is the tensor relu_ writes; in the loop, add_ writes d before fc4
    // reads it, and so after the previous iteration's observation.
    EXPECT_FALSE(written.at(0));
    EXPECT_TRUE(written.at(1));
    EXPECT_TRUE(written.at(2));
    EXPECT_TRUE(written.at(3));
  }
}

// ResNet's residual sums are written in place (out += identity) into the
// output of the convolution before them, which onnxruntime's targets observe;
// its layer inputs are never written after their observation.
TEST(FuseObservations, ResidualSumsWriteTheConvolutionOutputsTheyObserve) {
  auto model = Model::load(asset("resnet18_traced.pt"));
  model.fold_conv_batch_norm();
  const auto feeding = layers_feeding_adds(model.module(), "forward");
  ASSERT_EQ(feeding.size(), 8u + 3u);  // each block's last convolution, and the 3 downsamples
  std::vector<ObservedTensor> points;
  for (const auto& info : model.layers())
    if (info.quantizable) points.push_back({info.name, false});
  for (const auto& layer : feeding) points.push_back({layer, true});
  auto observed = with_observers(model.module(), "forward", points, nullptr, ObserveFusion::IntoClamps);
  std::map<size_t, bool> written;
  ObserveScope scope(ObservationSink([&](const Observation& o) { written[o.point] = o.written_later; }));
  torch::NoGradGuard no_grad;
  observed.forward({ramp({1, 3, 32, 32})});
  ASSERT_EQ(written.size(), points.size());
  for (const auto& [point, later] : written) {
    const ObservedTensor& p = points[point];
    EXPECT_EQ(later, p.output && p.layer.find("downsample") == std::string::npos)
        << p.layer << (p.output ? " output" : " input");
  }
}

TEST(FuseObservations, ResnetBlocksObserveInTheirRelus) {
  // Each block's second convolution reads a ReLU's result, and so do the
  // blocks after the first, but the stem's first convolution reads the
  // image, layer1.0 the max-pooled stem and fc the pooled features.
  expect_clamps_observe("resnet18_traced.pt", 8 + 7);
}

TEST(FuseObservations, MobilenetBlocksObserveInTheirRelu6) {
  // In each of the 17 inverted residual blocks, the depthwise and the
  // projecting convolutions read a ReLU6's result (hardtanh_ when traced);
  // the expanding ones read the block's input, the classifier pooled features.
  expect_clamps_observe("mobilenet_v2_traced.pt", 2 * 17);
}

// On a GPU the op's kernel computes the clamp and the blocks' extrema in one
// pass: the same bits as ATen's relu and hardtanh, and extrema that reduce to
// aminmax's.
TEST(ObservedClamp, KernelComputesAtensClampAndRange) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU";
  const auto op = c10::Dispatcher::singleton()
                      .findSchemaOrThrow("qforge::observed_clamp", "")
                      .typed<at::Tensor(const at::Tensor&, c10::IntArrayRef, double, double, bool, bool)>();
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::vector<std::pair<double, double>> clamps = {{0, inf}, {0, 6}, {-1, 0.3}};
  for (const auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16})
    for (const auto& [lower, upper] : clamps)
      for (const int64_t n : {1, 3, 1000, 4099, (1 << 20) + 3})
        for (const bool inplace : {false, true})
          for (const bool with_nan : {false, true}) {
            torch::manual_seed(n);
            torch::Tensor base = torch::randn({n + 1}, torch::kCUDA).mul_(3);
            // x is base[1:], misaligned by one element.
            base.index_put_({1}, -0.0f);
            if (n > 2) base.index_put_({1 + n / 2}, -inf);
            if (with_nan) base.index_put_({n}, nan);
            const torch::Tensor x = base.to(dtype).narrow(0, 1, n);
            const torch::Tensor expected = upper == inf ? torch::relu(x) : torch::hardtanh(x, lower, upper);
            std::vector<torch::Tensor> partials;
            torch::Tensor y;
            {
              ObserveScope scope(ObservationSink([&](const Observation& o) {
                EXPECT_TRUE(o.partial_extrema.defined()) << "the kernel did not run";
                partials.push_back(o.partial_extrema);
              }));
              torch::Tensor input = inplace ? x.clone() : x;
              y = op.call(input, {0, 1}, lower, upper, inplace, false);
              if (inplace) EXPECT_TRUE(y.is_same(input));
            }
            const std::string where = std::string(c10::toString(dtype)) + " [" + std::to_string(lower) + ", " +
                                      std::to_string(upper) + "] n=" + std::to_string(n) +
                                      (inplace ? " in place" : "") + (with_nan ? " with NaN" : "");
            ASSERT_EQ(partials.size(), 2u) << where;
            const auto bits = dtype == torch::kFloat ? torch::kInt : torch::kShort;
            EXPECT_TRUE(y.view(bits).equal(expected.view(bits))) << where;
            const auto [lo, hi] = torch::aminmax(expected.to(torch::kFloat));
            const torch::Tensor got_lo = partials[0].select(0, 0).amin(), got_hi = partials[0].select(0, 1).amax();
            EXPECT_TRUE(got_lo.view(torch::kInt).equal(lo.view(torch::kInt))) << where << ": " << got_lo.item<float>();
            EXPECT_TRUE(got_hi.view(torch::kInt).equal(hi.view(torch::kInt))) << where << ": " << got_hi.item<float>();
          }
}

// Calibration's observers on a GPU gather the same ranges and histograms,
// bit for bit, whether the clamps observe or every observer reduces apart.
TEST(ObservedClamp, ObserversOnTheGpuGatherWhatObserversApartGather) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU";
  for (const std::string name : {"resnet18_traced.pt", "mobilenet_v2_traced.pt"}) {
    SCOPED_TRACE(name);
    auto model = Model::load(asset(name));
    model.module().eval();
    model.module().to(torch::kCUDA);
    std::vector<ObservedTensor> points;
    for (const auto& info : model.layers())
      if (info.quantizable) points.push_back({info.name, false});
    TensorQuantSettings percentile;
    percentile.observer = Observer::Percentile;
    for (const TensorQuantSettings& settings : {TensorQuantSettings(), percentile}) {
      std::vector<std::vector<ActivationObserver>> gathered;
      for (const auto fusion : {ObserveFusion::IntoClamps, ObserveFusion::None}) {
        auto observed = with_observers(model.module(), "forward", points, nullptr, fusion);
        std::vector<ActivationObserver> observers(points.size(), ActivationObserver(settings));
        int fused_observations = 0;
        {
          ObserveScope scope(ObservationSink([&](const Observation& o) {
            fused_observations += o.partial_extrema.defined();
            observers[o.point].observe(o.x, o.partial_extrema);
          }));
          torch::NoGradGuard no_grad;
          for (int64_t batch = 0; batch < 3; ++batch) {
            torch::manual_seed(batch);
            observed.forward({torch::randn({4, 3, 32 + 16 * batch, 32}, torch::kCUDA)});
          }
        }
        EXPECT_EQ(fused_observations > 0, fusion == ObserveFusion::IntoClamps);
        gathered.push_back(std::move(observers));
      }
      for (size_t k = 0; k < points.size(); ++k) {
        const auto &fused = gathered[0][k], &apart = gathered[1][k];
        EXPECT_EQ(fused.observed_min(), apart.observed_min()) << points[k].layer;
        EXPECT_EQ(fused.observed_max(), apart.observed_max()) << points[k].layer;
        EXPECT_EQ(fused.histogram(), apart.histogram()) << points[k].layer;
        EXPECT_EQ(fused.histogram_edges(), apart.histogram_edges()) << points[k].layer;
      }
    }
  }
}
