// Where the calibration graph observes its tensors. A tensor that a ReLU,
// ReLU6 or hardtanh computes is observed by that clamp itself,
// qforge::observed_clamp, which on a GPU reduces the tensor's range in the
// same pass over memory that writes it; any other tensor gets a
// qforge::observe op before the node that reads it (graph/observe_op.h).
#pragma once
#include <torch/csrc/jit/ir/ir.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace qforge {

struct ObservationSite {
  torch::jit::Value* tensor;
  torch::jit::Node* before;  // the observation runs before this node
  int64_t point;
};

enum class ObserveFusion { None, IntoClamps };

// Inserts the observation of every site, in order, each op told whether the
// graph writes its tensor in place after it. With IntoClamps, a site
// whose tensor a clamp computes in the same block, and that nothing writes
// between the clamp and the site, is observed by the clamp instead. Returns
// the number of clamps that now observe.
int insert_observations(const std::shared_ptr<torch::jit::Graph>& graph, const std::vector<ObservationSite>& sites,
                        ObserveFusion fusion);

}  // namespace qforge
