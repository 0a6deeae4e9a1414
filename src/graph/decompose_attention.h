// The fused transformer ops that nn.MultiheadAttention and
// nn.TransformerEncoderLayer record when they run without autograd, written
// as their ATen pieces, so the linears inside them are called as layers.
#pragma once
#include <torch/csrc/jit/ir/ir.h>

namespace qforge {

// Replaces every aten::_native_multi_head_attention and
// aten::_transformer_encoder_layer_fwd in `graph` (also inside blocks) by
// aten::linear, matmul, softmax, layer_norm and activations that compute the
// same: the output projection (out_proj) and the feed-forward linears
// (linear1, linear2) then read their weights through aten::linear, where the
// observers and quantizers of any other Linear go. Returns how many it replaced.
int decompose_fused_attention(torch::jit::Graph& graph);

}  // namespace qforge
