#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>

#include "finetune/multi_tensor_adamw.h"

using namespace qforge;

namespace {

// Adapter-like tensors of several shapes, the same values for each optimizer under test.
std::vector<at::Tensor> parameters_on(const at::Device& device) {
  torch::manual_seed(7);
  std::vector<at::Tensor> out;
  for (auto shape : std::vector<std::vector<int64_t>>{{8, 3}, {5}, {2, 3, 4}, {1}})
    out.push_back(torch::randn(shape).to(device).requires_grad_());
  return out;
}

// Step `k`'s gradient of parameter `i`: the same on every run. Parameter 1 has
// none on step 2, so its moments fall a step behind the others'.
void set_gradients(std::vector<at::Tensor>& parameters, int k) {
  for (size_t i = 0; i < parameters.size(); ++i) {
    auto& p = parameters[i];
    if (i == 1 && k == 2) {
      p.mutable_grad() = at::Tensor();
      continue;
    }
    auto generator = at::make_generator<at::CPUGeneratorImpl>(100 * k + i);
    p.mutable_grad() = at::randn(p.sizes(), generator).mul_(3.0 / (k + 1)).to(p.device());
  }
}

template <class Optimizer>
std::vector<at::Tensor> train(Optimizer& optimizer, std::vector<at::Tensor> parameters, int steps, int first = 0) {
  for (int k = first; k < first + steps; ++k) {
    set_gradients(parameters, k);
    for (auto& group : optimizer.param_groups())
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(0.01 / (k + 1));
    optimizer.step();
  }
  return parameters;
}

torch::optim::AdamWOptions options() { return torch::optim::AdamWOptions(0.01).weight_decay(0.05); }

void expect_equal(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b, double tolerance) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const auto x = a[i].detach().cpu(), y = b[i].detach().cpu();
    if (tolerance == 0)
      EXPECT_TRUE(torch::equal(x, y)) << "tensor " << i << ": largest difference " << (x - y).abs().max().item<float>();
    else
      EXPECT_TRUE(torch::allclose(x, y, tolerance, tolerance)) << "tensor " << i;
  }
}

void expect_adamw_matches_libtorch(const at::Device& device, double tolerance) {
  auto mine = parameters_on(device), theirs = parameters_on(device);
  MultiTensorAdamW multi(mine, options());
  torch::optim::AdamW reference(theirs, options());
  expect_equal(train(multi, mine, 6), train(reference, theirs, 6), tolerance);
}

void expect_clip_matches_libtorch(const at::Device& device, double max_norm, double tolerance) {
  auto mine = parameters_on(device), theirs = parameters_on(device);
  set_gradients(mine, 1);
  set_gradients(theirs, 1);
  clip_gradient_norm(mine, max_norm);
  torch::nn::utils::clip_grad_norm_(theirs, max_norm);
  std::vector<at::Tensor> a, b;
  for (auto& p : mine) a.push_back(p.grad());
  for (auto& p : theirs) b.push_back(p.grad());
  expect_equal(a, b, tolerance);
}

}  // namespace

TEST(MultiTensorAdamW, StepsLikeLibTorchsAdamWBitForBit) { expect_adamw_matches_libtorch(torch::kCPU, 0); }

TEST(MultiTensorAdamW, ResumesFromLibTorchsAdamWState) {
  auto mine = parameters_on(torch::kCPU), theirs = parameters_on(torch::kCPU);
  torch::optim::AdamW first(mine, options());
  mine = train(first, mine, 3);
  std::stringstream saved;
  {
    torch::serialize::OutputArchive archive;
    first.save(archive);
    archive.save_to(saved);
  }
  MultiTensorAdamW resumed(mine, options());
  torch::serialize::InputArchive archive;
  archive.load_from(saved);
  resumed.load(archive);
  torch::optim::AdamW uninterrupted(theirs, options());
  expect_equal(train(resumed, mine, 3, 3), train(uninterrupted, train(uninterrupted, theirs, 3), 3, 3), 0);
}

TEST(MultiTensorAdamW, ClipsGradientsLikeLibTorchBitForBit) {
  expect_clip_matches_libtorch(torch::kCPU, 0.5, 0);  // clipped
  expect_clip_matches_libtorch(torch::kCPU, 1e4, 0);  // left as they are
}

TEST(MultiTensorAdamW, GpuStepsAndClipsLikeLibTorch) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU";
  // The GPU's multi-tensor kernels may round differently from the per-tensor ones.
  expect_adamw_matches_libtorch(torch::kCUDA, 1e-6);
  expect_clip_matches_libtorch(torch::kCUDA, 0.5, 1e-6);
}
