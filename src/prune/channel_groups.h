// Structured pruning's dependency groups: which layers' channels must be
// removed together, found on a method's inlined graph (graph/rewrite.h).
//
// Every convolution and Linear layer writes a channel space. The space flows
// through ops that keep channels apart (activations, pooling, dropout, a mean
// over other axes, depthwise convolutions) to the layers that read it; a
// residual add or an elementwise product couples two spaces into one group;
// concatenation along the channels lays spaces side by side; a flatten into
// a Linear gives each channel a run of features. Anything else a space
// reaches (a norm over the channels, a reshape into attention heads, a
// grouped convolution, the method's output) keeps its group whole, with the
// reason.
#pragma once
#include <torch/csrc/jit/ir/ir.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace qforge {

// One layer's share of a group: the group's channels are the layer's output
// channels [offset, offset + channels) (writer, depthwise) or its input
// channels there (reader); a Linear reading them through a flatten sees
// `per_channel` features for each.
struct ChannelUse {
  // Norm: a batch norm over the channels (its weight, bias and running
  // statistics lose the same ones); `layer` is its module.
  enum class Role { Writer, Depthwise, Reader, Norm };
  std::string layer;
  Role role = Role::Writer;
  int64_t offset = 0;
  int64_t per_channel = 1;
  torch::jit::Node* node = nullptr;  // the layer's conv/linear node
};

struct ChannelDependencyGroup {
  int64_t channels = 0;
  std::vector<ChannelUse> uses;
  std::string reason;  // why no channel of it can be removed; empty: they can
};

// A view/reshape that flattens channel groups into features with a constant
// size: the size follows the channels kept.
struct FlattenSize {
  torch::jit::Node* node = nullptr;  // the prim::ListConstruct of the sizes
  size_t index = 0;                  // the constant element
  std::vector<std::pair<size_t, int64_t>> segments;  // (group, channels) flattened, in order
};

struct ChannelGraph {
  std::vector<ChannelDependencyGroup> groups;
  std::vector<FlattenSize> flatten_sizes;
};

struct LayerFacts {
  std::vector<int64_t> weight_shape;
  std::string keep_whole;  // why the layer's channels must stay (empty: they may go)
};

// Where a convolution node takes its `groups` argument (nullopt: not a convolution with one).
std::optional<size_t> convolution_groups_input(const torch::jit::Node* n);

// `graph`: the inlined method; `self`: its module argument; `facts`: every
// conv/linear layer the graph reads, by module path.
ChannelGraph find_channel_groups(torch::jit::Graph& graph, const std::map<std::string, LayerFacts>& facts);

}  // namespace qforge
