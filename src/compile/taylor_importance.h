// First-order Taylor importance of the channels layers read (structured
// pruning's `importance: taylor`). Zeroing channel c of row n of the input a
// layer reads changes the loss by about -t[n, c], t[n, c] = Σ ∂L/∂x · x over
// that row's positions of the channel, ∂L/∂x through that layer's read alone.
// A channel group is read by several layers at once, and removing a channel
// zeroes it for all of them, so a group's score of channel c is Σ over rows of
// (Σ over its readers of t[n, c])², the criterion of Molchanov et al. (2019)
// with a gate on every reader's input. Sums are exact over every rank's shard.
#pragma once
#include <ATen/Tensor.h>
#include <torch/script.h>

#include <functional>
#include <string>
#include <vector>

#include "compile/input_statistics.h"

namespace qforge {

// Where a group's channels lie in one observed input: features
// [offset·per_channel, (offset + channels)·per_channel), per_channel of them a
// channel (a flatten into a Linear gives each channel a run of features).
struct ChannelSpan {
  size_t input = 0;
  int64_t offset = 0;
  int64_t per_channel = 1;
};

struct SpannedChannels {
  int64_t channels = 0;
  std::vector<ChannelSpan> spans;
};

// The loss of one batch, from the model's output, to differentiate.
using BatchLoss = std::function<at::Tensor(const c10::IValue& output, const Batch& batch)>;

// Collective: one pass over the shard with gradients; per target, [channels]
// float64 scores on the CPU, identical on every rank.
std::vector<at::Tensor> taylor_scores(const torch::jit::Module& model, const std::string& method,
                                      const std::vector<ObservedInput>& inputs,
                                      const std::vector<SpannedChannels>& targets, const ForwardFn& run,
                                      const BatchLoss& loss, const ShardSource& shard, Communicator& comm,
                                      PhaseTimer& timer, const std::string& phase);

}  // namespace qforge
