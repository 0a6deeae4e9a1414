// The order in which GPTQ solves layers (and AWQ searches them): the model's repeated blocks one after
// another (block k+1 is calibrated on the outputs of the already solved block
// k), and the layers outside them in steps of their own, in definition order.
#pragma once
#include <string>
#include <vector>

#include "qforge/compile.h"

namespace qforge {

struct SolveSteps {
  // Each step: the names of the layers solved together, and the block they form ("" outside blocks).
  struct Step {
    std::string block;
    std::vector<std::string> layers;
  };
  std::vector<Step> steps;
  std::string note;  // why there is one step only (no repeated blocks), or empty
};

// `layers`: the layers to solve, in definition order; `all_layers`: every
// layer of the model (the module tree). `blocks`: "auto" (the children of the
// container whose same-type children hold the most of `layers`), "none" (one
// step, every layer on the float model's inputs), or a glob naming the blocks
// ("blocks.*"); a glob that names no layer is a ConfigError naming
// weights.<algorithm>.blocks.
SolveSteps plan_solve_steps(const std::vector<std::string>& layers, const std::vector<LayerInfo>& all_layers,
                            const std::string& blocks, const std::string& algorithm);

}  // namespace qforge
