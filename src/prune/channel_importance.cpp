#include "prune/channel_importance.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "qforge/errors.h"

namespace qforge {
namespace {

// The weights of `use` that touch the group's channels, as [channels, per_channel, rest]:
// a writer's output rows, a reader's input columns (a Linear's run of features each).
at::Tensor weights_of_channels(const ChannelUse& use, const at::Tensor& weight, int64_t channels) {
  const at::Tensor w = weight.detach().to(at::kCPU, at::kDouble);
  if (use.role != ChannelUse::Role::Reader)
    return w.slice(0, use.offset, use.offset + channels).reshape({channels, 1, -1});
  const int64_t p = use.per_channel;
  const at::Tensor columns = w.slice(1, use.offset * p, (use.offset + channels) * p);
  // [outputs, channels·p, kernel...] -> [channels, p, outputs·kernel]
  return columns.reshape({w.size(0), channels, p, -1}).permute({1, 2, 0, 3}).reshape({channels, p, -1});
}

at::Tensor use_scores(const ChannelUse& use, const at::Tensor& weight, int64_t channels, ChannelImportance importance,
                      const std::map<std::string, at::Tensor>& input_means) {
  const at::Tensor w = weights_of_channels(use, weight, channels);
  if (importance == ChannelImportance::L1) return w.abs().sum({1, 2});
  if (importance == ChannelImportance::L2) return w.pow(2).sum({1, 2}).sqrt();
  // activation: what the readers' inputs carry through each channel
  const auto found = input_means.find(use.layer);
  if (found == input_means.end() || !found->second.defined())
    throw Error("structured pruning: no input statistics for layer '" + use.layer + "'");
  const int64_t p = use.per_channel;
  const at::Tensor means =
      found->second.to(at::kDouble).slice(0, use.offset * p, (use.offset + channels) * p).reshape({channels, p});
  return means.mul(w.pow(2).sum(2).sqrt()).sum(1);
}

}  // namespace

at::Tensor channel_scores(const ChannelDependencyGroup& group, const WeightOf& weight, ChannelImportance importance,
                          const std::map<std::string, at::Tensor>& input_means) {
  at::Tensor total = at::zeros({group.channels}, at::kDouble);
  for (const auto& use : group.uses) {
    if (use.role == ChannelUse::Role::Norm) continue;  // the weights around it decide
    if (importance == ChannelImportance::Activation && use.role != ChannelUse::Role::Reader) continue;
    at::Tensor s = use_scores(use, weight(use.layer), group.channels, importance, input_means);
    const double mean = s.mean().item<double>();
    if (mean > 0) total.add_(s.div(mean));
  }
  return total;
}

int64_t channels_to_keep(int64_t channels, double sparsity) {
  int64_t kept = std::llround((1.0 - sparsity) * static_cast<double>(channels));
  if (channels % 8 == 0 && kept >= 8) kept = std::llround(static_cast<double>(kept) / 8.0) * 8;
  return std::clamp<int64_t>(kept, 1, channels);
}

at::Tensor highest_channels(const at::Tensor& scores, int64_t kept) {
  const at::Tensor order = std::get<1>(at::sort(scores, /*stable=*/true, 0, /*descending=*/true));
  return std::get<0>(at::sort(order.slice(0, 0, kept), /*stable=*/true, 0, /*descending=*/false));
}

}  // namespace qforge
