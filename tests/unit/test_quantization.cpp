#include <torch/torch.h>

#include "quant/observer.h"
#include "quant/quantization.h"
#include "test_helpers.h"

using namespace qforge;

namespace {
TensorQuantSettings activation(Observer observer, bool symmetric, int64_t bits = 8) {
  TensorQuantSettings s;
  s.observer = observer;
  s.symmetric = symmetric;
  s.is_signed = symmetric;
  s.bits = bits;
  return s;
}

ActivationRange observe_all(const TensorQuantSettings& s, const std::vector<torch::Tensor>& batches) {
  ActivationObserver obs(s);
  for (const auto& b : batches) obs.observe(b);
  return obs.compute();
}
}  // namespace

TEST(Quantization, IntegerRangesAtEveryWidth) {
  for (int64_t bits = 2; bits <= 8; ++bits) {
    const auto s = quant_range(bits, true);
    const auto u = quant_range(bits, false);
    EXPECT_EQ(s.qmin, -(1 << (bits - 1)));
    EXPECT_EQ(s.qmax, (1 << (bits - 1)) - 1);
    EXPECT_EQ(u.qmin, 0);
    EXPECT_EQ(u.qmax, (1 << bits) - 1);
  }
  EXPECT_THROW(quant_range(1, true), std::exception);
  EXPECT_THROW(quant_range(9, true), std::exception);
}

TEST(Quantization, ClosedFormScalesAndZeroPoints) {
  const auto lo = torch::tensor({-1.0}, torch::kDouble), hi = torch::tensor({2.0}, torch::kDouble);
  auto q = qparams_from_range(lo, hi, quant_range(8, true), true);
  EXPECT_FLOAT_EQ(q.scale.item<float>(), 2.0f / 127.0f);
  EXPECT_EQ(q.zero_point.item<int>(), 0);
  q = qparams_from_range(lo, hi, quant_range(8, false), false);
  EXPECT_FLOAT_EQ(q.scale.item<float>(), 3.0f / 255.0f);
  EXPECT_EQ(q.zero_point.item<int>(), 85);  // 0 - round(-1 / (3/255)) = 85
  q = qparams_from_range(lo, hi, quant_range(4, false), true);
  EXPECT_FLOAT_EQ(q.scale.item<float>(), 2.0f / 7.0f);
  EXPECT_EQ(q.zero_point.item<int>(), 8);
  // A range that excludes zero is widened to contain it.
  q = qparams_from_range(torch::tensor({1.0}, torch::kDouble), torch::tensor({3.0}, torch::kDouble),
                         quant_range(8, false), false);
  EXPECT_EQ(q.zero_point.item<int>(), 0);
  EXPECT_FLOAT_EQ(q.scale.item<float>(), 3.0f / 255.0f);
}

TEST(Quantization, RoundTripAtEveryWidthSignedAndUnsigned) {
  torch::manual_seed(0);
  for (int64_t bits = 2; bits <= 8; ++bits) {
    for (bool sym : {true, false}) {
      const auto range = quant_range(bits, sym);
      const auto x = torch::randn({1000}) * 3;
      const auto q = qparams_from_range(x.min().to(torch::kDouble).reshape({1}),
                                        x.max().to(torch::kDouble).reshape({1}), range, sym);
      const auto y = fake_quantize(x, q, range);
      // Values already on the grid survive unchanged; the rest move by at most half a step.
      EXPECT_TRUE(torch::equal(fake_quantize(y, q, range), y)) << bits << " bits";
      EXPECT_LE((y - x).abs().max().item<float>(), q.scale.item<float>() * 0.5001f) << bits << " bits";
      const auto codes = quantize_codes(x, q, range);
      EXPECT_GE(codes.min().item<float>(), range.qmin);
      EXPECT_LE(codes.max().item<float>(), range.qmax);
    }
  }
}

TEST(Quantization, ReferenceEqualsATenFakeQuantOps) {
  torch::manual_seed(1);
  const auto x = torch::randn({8, 16}) * 2;
  for (int64_t bits : {4, 8}) {
    for (bool sym : {true, false}) {
      const auto range = quant_range(bits, sym);
      const auto q = qparams_from_range(x.min().to(torch::kDouble).reshape({1}),
                                        x.max().to(torch::kDouble).reshape({1}), range, sym);
      const auto aten = torch::fake_quantize_per_tensor_affine(x, q.scale.item<float>(), q.zero_point.item<int>(),
                                                               range.qmin, range.qmax);
      EXPECT_TRUE(torch::equal(fake_quantize(x, q, range), aten)) << bits << " bits, symmetric " << sym;
      const auto lo = std::get<0>(x.min(1)).to(torch::kDouble), hi = std::get<0>(x.max(1)).to(torch::kDouble);
      const auto qc = qparams_from_range(lo, hi, range, sym);
      const auto aten_channel =
          torch::fake_quantize_per_channel_affine(x, qc.scale, qc.zero_point, 0, range.qmin, range.qmax);
      EXPECT_TRUE(torch::equal(fake_quantize(x, qc, range, 0), aten_channel));
    }
  }
}

TEST(Observers, MinMaxTracksTheExtremes) {
  const auto r =
      observe_all(activation(Observer::MinMax, false), {torch::tensor({0.5f, -2.0f}), torch::tensor({3.0f, 1.0f})});
  EXPECT_EQ(r.lo, -2.0);
  EXPECT_EQ(r.hi, 3.0);
  EXPECT_FLOAT_EQ(r.qparams.scale.item<float>(), 5.0f / 255.0f);
}

// One pass: the running histogram widens its grid as the range grows. What
// it counts must be what counting every value on the final grid gives, in
// any order and grouping of the batches.
TEST(Observers, HistogramIsTheFinalGridsInAnyBatching) {
  torch::manual_seed(3);
  const std::vector<torch::Tensor> batches = {torch::randn({500}) * 0.01, torch::relu(torch::randn({700})) * 3,
                                              torch::randn({300}) * 40 - 7, torch::tensor({0.0f, 1e-30f, -1e-30f})};
  const auto all = torch::cat(batches);
  for (bool symmetric : {true, false}) {
    for (int64_t bins : {16, 2048}) {
      auto s = activation(Observer::Percentile, symmetric);
      s.histogram_bins = bins;
      const std::string what = std::string(symmetric ? "symmetric, " : "asymmetric, ") + std::to_string(bins) + " bins";
      ActivationObserver growing(s), shrinking(s), once(s);
      for (const auto& b : batches) growing.observe(b);
      for (auto b = batches.rbegin(); b != batches.rend(); ++b) shrinking.observe(*b);
      once.observe(all);
      EXPECT_EQ(growing.histogram(), once.histogram()) << what;
      EXPECT_EQ(shrinking.histogram(), once.histogram()) << what;
      EXPECT_EQ(growing.histogram_edges(), once.histogram_edges()) << what;

      // The grid: power-of-two bins from the bin of the minimum (of 0) to that of the maximum.
      const auto& counts = once.histogram();
      const auto [lo, hi] = once.histogram_edges();
      const double width = (hi - lo) / static_cast<double>(counts.size());
      EXPECT_EQ(std::exp2(std::round(std::log2(width))), width) << what;
      const double amax = all.abs().max().item<double>();
      EXPECT_GE(amax / width, static_cast<double>(bins)) << what << ": fewer bins than asked over [0, max |x|]";
      EXPECT_LT(amax / width, 2.0 * static_cast<double>(bins)) << what;
      const auto t = (symmetric ? all.abs() : all).to(torch::kDouble);
      EXPECT_LE(lo, t.min().item<double>()) << what;
      EXPECT_GT(hi, t.max().item<double>()) << what;
      const auto expected = torch::bincount((t / width).floor().sub(lo / width).to(torch::kLong), {},
                                            static_cast<int64_t>(counts.size()));
      EXPECT_EQ(counts,
                std::vector<int64_t>(expected.data_ptr<int64_t>(), expected.data_ptr<int64_t>() + expected.numel()))
          << what;
    }
  }
}

TEST(Observers, PercentileCutsTheTail) {
  // 0, 1, ..., 999 and one outlier at 100000: the 99.9th percentile of |x| sits near 1000.
  auto data = torch::arange(1000, torch::kFloat);
  data = torch::cat({data, torch::tensor({100000.0f})});
  auto s = activation(Observer::Percentile, true);
  s.percentile = 99.9;
  s.histogram_bins = 100000;
  const auto r = observe_all(s, {data});
  EXPECT_NEAR(r.hi, 1000.0, 2.0);
  EXPECT_EQ(r.lo, -r.hi);
}

TEST(Observers, EntropyClipsAHeavyTailButNotAUniformRange) {
  torch::manual_seed(2);
  const auto gauss = torch::randn({200000});
  const auto tail = torch::cat({gauss, torch::tensor({40.0f})});
  const auto r = observe_all(activation(Observer::Entropy, true), {tail});
  EXPECT_LT(r.hi, 20.0);  // the single outlier at 40 is not worth the resolution
  EXPECT_GT(r.hi, 2.0);
  const auto uniform = torch::rand({200000}) * 2 - 1;
  const auto u = observe_all(activation(Observer::Entropy, true), {uniform});
  EXPECT_GT(u.hi, 0.9);
}

TEST(Observers, MseShrinksARangeStretchedByAnOutlier) {
  torch::manual_seed(3);
  const auto data = torch::cat({torch::randn({100000}), torch::tensor({30.0f})});
  const auto minmax = observe_all(activation(Observer::MinMax, true, 4), {data});
  const auto mse = observe_all(activation(Observer::Mse, true, 4), {data});
  EXPECT_LT(mse.hi, minmax.hi);
  const auto range = quant_range(4, true);
  const double err_mse = (fake_quantize(data, mse.qparams, range) - data).pow(2).sum().item<double>();
  const double err_minmax = (fake_quantize(data, minmax.qparams, range) - data).pow(2).sum().item<double>();
  EXPECT_LT(err_mse, err_minmax);
}

// The GPU counts with its own kernel; its bins must be the CPU's, value for
// value, so that a compile gives the same ranges on either.
TEST(Observers, GpuHistogramHasTheCpuBins) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU";
  torch::manual_seed(4);
  const auto gauss = torch::randn({3, 1000, 37});
  const std::vector<std::pair<std::string, torch::Tensor>> inputs = {
      {"post-ReLU", torch::relu(gauss)},
      {"shifted", gauss * 3 + 1},
      {"transposed", gauss.transpose(0, 2) * 0.01},
      {"misaligned", gauss.reshape({-1}).narrow(0, 1, 100001)},
      {"bin edges", torch::arange(-4096, 4097, torch::kFloat) / 1024},
  };
  for (const auto& [name, x] : inputs) {
    for (bool symmetric : {true, false}) {
      for (int64_t bins : {16, 2048}) {
        auto s = activation(Observer::Percentile, symmetric);
        s.histogram_bins = bins;
        ActivationObserver cpu(s), gpu(s);
        const auto on_gpu = x.to(torch::kCUDA);
        // A small first batch, then a wider one: the grid widens on the device as on the host.
        gpu.observe(on_gpu.narrow(0, 0, 1) * 0.001);
        cpu.observe(x.narrow(0, 0, 1) * 0.001);
        cpu.observe(x);
        gpu.observe(on_gpu);
        EXPECT_EQ(gpu.histogram(), cpu.histogram()) << name << (symmetric ? ", symmetric, " : ", ") << bins << " bins";
        EXPECT_EQ(gpu.histogram_edges(), cpu.histogram_edges()) << name;
      }
    }
  }
}

TEST(Observers, WeightsPerTensorChannelAndGroup) {
  const auto w = torch::tensor({{1.0f, -2.0f, 0.5f, 4.0f}, {0.25f, 0.5f, -1.0f, 0.1f}});
  TensorQuantSettings s;  // int8 symmetric
  s.granularity = Granularity::Tensor;
  auto q = observe_weight(w, s);
  EXPECT_FLOAT_EQ(q.qparams.scale.item<float>(), 4.0f / 127.0f);
  s.granularity = Granularity::Channel;
  q = observe_weight(w, s);
  ASSERT_EQ(q.qparams.scale.numel(), 2);
  EXPECT_FLOAT_EQ(q.qparams.scale[0].item<float>(), 4.0f / 127.0f);
  EXPECT_FLOAT_EQ(q.qparams.scale[1].item<float>(), 1.0f / 127.0f);
  s.granularity = Granularity::Group;
  s.group_size = 2;
  q = observe_weight(w, s);
  ASSERT_EQ(q.qparams.scale.numel(), 4);  // two groups per row
  EXPECT_FLOAT_EQ(q.qparams.scale[1].item<float>(), 4.0f / 127.0f);
  EXPECT_FLOAT_EQ(q.qparams.scale[2].item<float>(), 0.5f / 127.0f);
  const auto fq = fake_quantize_weight(w, q, s);
  EXPECT_EQ(fq.sizes(), w.sizes());
  EXPECT_TRUE(torch::equal(fake_quantize_weight(fq, observe_weight(fq, s), s), fq));  // re-quantizing changes nothing
  s.group_size = 3;
  EXPECT_THROW(observe_weight(w, s), std::exception);
}
