// The model's method cut after each repeated block, as methods of a clone.
// Segment 0 takes the method's arguments and runs up to and including block
// 0's call; segment j runs what follows block j-1 up to and including block
// j's call; the last segment runs what follows the last block and returns the
// method's result. Every other segment returns, as one tuple, the values later
// segments read (hidden states, masks, positions, ...): the next segment's
// arguments. Sequential GPTQ keeps those per batch from one block to the next
// instead of running the model from its inputs for every block.
#pragma once
#include <torch/script.h>

#include <map>
#include <string>
#include <variant>
#include <vector>

namespace qforge {

struct BlockSegments {
  torch::jit::Module module;                       // a clone of the model carrying the segment methods
  std::vector<std::string> methods;                // blocks.size() + 1 segment methods, in order
  std::map<std::string, size_t> segment_of_layer;  // layer -> the one segment that reads its weight
};

// The segments, or why `method` cannot be cut at `blocks` (module paths, in
// the order the method calls them): a block called inside a loop or a branch,
// more than once, out of order, or not at all.
std::variant<BlockSegments, std::string> split_at_blocks(const torch::jit::Module& model, const std::string& method,
                                                         const std::vector<std::string>& blocks);

}  // namespace qforge
