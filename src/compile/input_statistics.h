// Per-input-channel statistics of layer inputs over every rank's shard, for
// AWQ and SmoothQuant, identical on every rank and rank count: maxima reduce
// with MAX, and sums go through exact_sum (runtime/exact_sum.h), one item per
// batch.
#pragma once
#include <ATen/Tensor.h>
#include <torch/script.h>

#include <string>
#include <vector>

#include "compile/phase_timer.h"
#include "data/batches.h"
#include "runtime/communicator.h"

namespace qforge {

// The input of one layer, `channels` wide (its last axis, or axis 1 of a
// convolution's [N, C, ...] input).
struct ObservedInput {
  std::string layer;
  int64_t channels = 0;
  bool channels_first = false;
};

struct ChannelStatistics {
  at::Tensor max_abs;   // [channels] float64 on the CPU: the largest |x| of each channel
  at::Tensor mean_abs;  // [channels] float64 on the CPU: the mean |x| of each channel
  int64_t rows = 0;     // input vectors seen, over all ranks
};

// Collective: one pass over the shard.
std::vector<ChannelStatistics> channel_statistics(const torch::jit::Module& model, const std::string& method,
                                                  const std::vector<ObservedInput>& inputs, const ForwardFn& run,
                                                  const ShardSource& shard, Communicator& comm, PhaseTimer& timer,
                                                  const std::string& phase);

// Collective: one pass over the shard. candidates[i][k] is an error matrix
// [m, channels] float64 for input i (awq_weight_error); returns per input the sums
// over every input row x of |E_k·x|², [candidates] float64 on the CPU.
std::vector<at::Tensor> candidate_errors(const torch::jit::Module& model, const std::string& method,
                                         const std::vector<ObservedInput>& inputs,
                                         const std::vector<std::vector<at::Tensor>>& candidates, const ForwardFn& run,
                                         const ShardSource& shard, Communicator& comm, PhaseTimer& timer,
                                         const std::string& phase);

}  // namespace qforge
