// Every method and function call in a TorchScript graph replaced by its body,
// however the callees' cached graphs were made.
#pragma once
#include <torch/csrc/jit/ir/ir.h>

namespace qforge {

// Inlines until no prim::CallMethod/prim::CallFunction is left that can be
// inlined. torch::jit::Inline copies each callee's *optimized* graph, which
// LibTorch caches on first use: a callee first run while the executor did not
// optimize (compile() runs graphs unoptimized) keeps its own calls, and one
// pass leaves them in. Later passes inline those.
void inline_calls(torch::jit::Graph& graph);

}  // namespace qforge
