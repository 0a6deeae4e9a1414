// How much each channel of a structured-pruning group matters, and which to
// keep. Scores sum over the group's layers, each layer's scores divided by
// their mean first, so a wide layer does not outvote the others.
#pragma once
#include <ATen/Tensor.h>

#include <functional>
#include <map>
#include <string>

#include "prune/channel_groups.h"
#include "qforge/config.h"

namespace qforge {

// The weight of a layer, as the model holds it.
using WeightOf = std::function<at::Tensor(const std::string& layer)>;

// [group.channels] float64 scores. l1 / l2: the norms of every weight writing
// and reading each channel. activation: for every layer reading the channels,
// the mean |x| of each input channel over the calibration inputs (`input_means`:
// layer -> [its input channels or features]) times the norm of the weights
// reading it.
at::Tensor channel_scores(const ChannelDependencyGroup& group, const WeightOf& weight, ChannelImportance importance,
                          const std::map<std::string, at::Tensor>& input_means);

// The channels kept: the highest scores (ties to the lower index), in order.
// `kept` of them; rounded to a multiple of 8 where the group's channels are one.
int64_t channels_to_keep(int64_t channels, double sparsity);
at::Tensor highest_channels(const at::Tensor& scores, int64_t kept);

}  // namespace qforge
