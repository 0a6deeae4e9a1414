// Structured pruning's removal: the channels a group does not keep leave the
// weights of every layer that writes or reads them, and the graph's constants
// that count them (a depthwise convolution's groups, a flatten's size), so the
// model is a smaller dense one.
#pragma once
#include <ATen/Tensor.h>
#include <torch/script.h>

#include <vector>

#include "prune/channel_groups.h"

namespace qforge {

// `module`: the model whose method's inlined graph is `graph` (the one the
// groups were found on); kept[g]: the channels group g keeps, ascending
// (undefined: all of them).
void remove_channels(torch::jit::Module& module, torch::jit::Graph& graph, const ChannelGraph& groups,
                     const std::vector<at::Tensor>& kept);

}  // namespace qforge
