#include "finetune/multi_tensor_adamw.h"

#include <ATen/ATen.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>
#include <string>
#include <type_traits>

namespace qforge {
namespace {

// LibTorch 1.13 keys an optimizer's state by the printed TensorImpl address,
// 2.x by the address itself.
template <class State>
typename State::key_type state_key(const State&, const at::Tensor& parameter) {
  using Key = typename State::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream text;
    text << static_cast<const void*>(parameter.unsafeGetTensorImpl());
    return text.str();
  } else {
    return static_cast<Key>(parameter.unsafeGetTensorImpl());
  }
}

// The tensors whose moments have taken the same number of steps: they share
// the bias corrections, so one op per list updates them all.
struct SameStep {
  std::vector<at::Tensor> parameters, gradients, averages, squared_averages;
};

void update(SameStep& l, int64_t step, const torch::optim::AdamWOptions& o) {
  const auto [beta1, beta2] = o.betas();
  const double bias_correction1 = 1 - std::pow(beta1, step);
  const double bias_correction2 = 1 - std::pow(beta2, step);
  at::_foreach_mul_(l.averages, beta1);
  at::_foreach_add_(l.averages, l.gradients, 1 - beta1);
  at::_foreach_mul_(l.squared_averages, beta2);
  at::_foreach_addcmul_(l.squared_averages, l.gradients, l.gradients, 1 - beta2);
  std::vector<at::Tensor> denominators = at::_foreach_sqrt(l.squared_averages);
  at::_foreach_div_(denominators, std::sqrt(bias_correction2));
  at::_foreach_add_(denominators, o.eps());
  at::_foreach_addcdiv_(l.parameters, l.averages, denominators, -o.lr() / bias_correction1);
}

bool any_amsgrad(std::vector<torch::optim::OptimizerParamGroup>& groups) {
  return std::any_of(groups.begin(), groups.end(),
                     [](auto& g) { return static_cast<torch::optim::AdamWOptions&>(g.options()).amsgrad(); });
}

}  // namespace

torch::optim::AdamWParamState& MultiTensorAdamW::state_of(const at::Tensor& parameter) {
  auto& slot = state()[state_key(state(), parameter)];
  if (!slot) {
    auto fresh = std::make_unique<torch::optim::AdamWParamState>();
    fresh->exp_avg(torch::zeros_like(parameter, at::MemoryFormat::Preserve));
    fresh->exp_avg_sq(torch::zeros_like(parameter, at::MemoryFormat::Preserve));
    slot = std::move(fresh);
  }
  return static_cast<torch::optim::AdamWParamState&>(*slot);
}

at::Tensor MultiTensorAdamW::step(LossClosure closure) {
  if (closure || any_amsgrad(param_groups())) return torch::optim::AdamW::step(std::move(closure));
  torch::NoGradGuard no_grad;
  for (auto& group : param_groups()) {
    const auto& options = static_cast<torch::optim::AdamWOptions&>(group.options());
    std::vector<at::Tensor> decayed;
    std::map<int64_t, SameStep> by_step;
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      TORCH_CHECK(!p.grad().is_sparse(), "AdamW does not support sparse gradients");
      decayed.push_back(p);
      auto& s = state_of(p);
      s.step(s.step() + 1);
      SameStep& l = by_step[s.step()];
      l.parameters.push_back(p);
      l.gradients.push_back(p.grad());
      l.averages.push_back(s.exp_avg());
      l.squared_averages.push_back(s.exp_avg_sq());
    }
    if (options.weight_decay() != 0) at::_foreach_mul_(decayed, 1 - options.lr() * options.weight_decay());
    for (auto& [step, l] : by_step) update(l, step, options);
  }
  return {};
}

void clip_gradient_norm(const std::vector<at::Tensor>& parameters, double max_norm) {
  std::vector<at::Tensor> gradients;
  for (const auto& p : parameters)
    if (p.grad().defined()) gradients.push_back(p.grad());
  if (gradients.empty()) return;
  torch::NoGradGuard no_grad;
  const std::vector<at::Tensor> norms = at::_foreach_norm(gradients, 2);
  const at::Tensor total = norms.size() == 1 ? norms[0] : at::stack(norms).norm(2);
  const at::Tensor factor = at::clamp(max_norm / (total + 1e-6), c10::nullopt, 1.0);
#if TORCH_VERSION_MAJOR >= 2 && (TORCH_VERSION_MAJOR > 2 || TORCH_VERSION_MINOR >= 1)
  at::_foreach_mul_(gradients, factor);  // a tensor factor: one op, no read-back
#else
  for (auto& g : gradients) g.mul_(factor);
#endif
}

}  // namespace qforge
