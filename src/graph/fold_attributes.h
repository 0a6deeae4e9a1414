// A method's graph with its modules' plain attributes (bool, int, float,
// string, None: `self.use_res_connect`, `self.padding_mode`, `self.training`)
// written in as constants and the branches they decide folded away, so the
// layers a scripted model calls inside `if self.flag:` appear in the graph's
// top level. For a compiled model, whose attributes no longer change.
#pragma once
#include <torch/csrc/jit/ir/ir.h>
#include <torch/script.h>

#include <memory>

namespace qforge {

// `graph`: an inlined method of `module` (its input 0 is `module`).
void fold_plain_attributes(std::shared_ptr<torch::jit::Graph>& graph, const torch::jit::Module& module);

}  // namespace qforge
