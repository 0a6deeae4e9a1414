#include "prune/channel_removal.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <set>

#include "graph/model.h"
#include "qforge/errors.h"

namespace qforge {
namespace {

// The channels of one group as one layer sees them along one axis.
struct Piece {
  int64_t offset = 0, channels = 0, per_channel = 1;
  at::Tensor kept;  // undefined: all
};

// The indices along the axis that stay: every piece's kept channels, each a run of per_channel.
at::Tensor kept_indices(std::vector<Piece> pieces, int64_t size, const std::string& layer) {
  std::sort(pieces.begin(), pieces.end(), [](const Piece& a, const Piece& b) { return a.offset < b.offset; });
  std::vector<at::Tensor> parts;
  int64_t next = 0;
  for (const auto& p : pieces) {
    if (p.offset * p.per_channel != next)
      throw Error("structured pruning: the channel groups of layer '" + layer + "' do not cover its channels");
    const at::Tensor channels = p.kept.defined() ? p.kept : at::arange(p.channels, at::kLong);
    const at::Tensor first = channels.add(p.offset).mul(p.per_channel);
    parts.push_back(first.unsqueeze(1).add(at::arange(p.per_channel, at::kLong)).reshape({-1}));
    next += p.channels * p.per_channel;
  }
  if (next != size)
    throw Error("structured pruning: the channel groups of layer '" + layer + "' do not cover its channels");
  return at::cat(parts);
}

void set_constant(torch::jit::Graph& graph, torch::jit::Node* node, size_t input, int64_t value) {
  torch::jit::WithInsertPoint guard(node);
  node->replaceInput(input, graph.insertConstant(value));
}

}  // namespace

void remove_channels(torch::jit::Module& module, torch::jit::Graph& graph, const ChannelGraph& groups,
                     const std::vector<at::Tensor>& kept) {
  std::map<std::pair<std::string, int64_t>, std::vector<Piece>> axes;  // (layer, weight axis) -> pieces
  std::map<std::string, torch::jit::Node*> depthwise;
  std::set<std::string> norms;
  bool changes = false;
  for (size_t g = 0; g < groups.groups.size(); ++g) {
    changes = changes || kept[g].defined();
    for (const auto& use : groups.groups[g].uses) {
      const int64_t axis = use.role == ChannelUse::Role::Reader ? 1 : 0;
      axes[{use.layer, axis}].push_back({use.offset, groups.groups[g].channels, use.per_channel, kept[g]});
      if (use.role == ChannelUse::Role::Depthwise) depthwise[use.layer] = use.node;
      if (use.role == ChannelUse::Role::Norm) norms.insert(use.layer);
    }
  }
  if (!changes) return;
  for (const auto& [key, pieces] : axes) {
    const auto& [layer, axis] = key;
    if (std::none_of(pieces.begin(), pieces.end(), [](const Piece& p) { return p.kept.defined(); })) continue;
    torch::jit::Module m = submodule(module, layer, "the model");
    // A layer's weight and bias; a batch norm's per-channel tensors (some may be None).
    const std::vector<std::string> names = norms.count(layer)
                                               ? std::vector<std::string>{"weight", "bias", "running_mean", "running_var"}
                                               : std::vector<std::string>{"weight", axis == 0 ? "bias" : ""};
    at::Tensor index;
    for (const auto& name : names) {
      if (name.empty() || !m.hasattr(name) || !m.attr(name).isTensor()) continue;
      const at::Tensor t = m.attr(name).toTensor();
      const int64_t along = name == "weight" ? axis : 0;
      if (!index.defined()) index = kept_indices(pieces, t.size(along), layer).to(t.device());
      m.setattr(name, t.index_select(along, index).contiguous());
    }
  }
  for (const auto& [layer, node] : depthwise) {
    const int64_t channels = submodule(module, layer, "the model").attr("weight").toTensor().size(0);
    set_constant(graph, node, *convolution_groups_input(node), channels);
  }
  for (const auto& f : groups.flatten_sizes) {
    int64_t before = 0, after = 0;
    for (const auto& [g, channels] : f.segments) {
      before += channels;
      after += kept[g].defined() ? kept[g].numel() : channels;
    }
    const int64_t features = torch::jit::toIValue(f.node->input(f.index))->toInt();
    set_constant(graph, f.node, f.index, features / before * after);
  }
}

}  // namespace qforge
