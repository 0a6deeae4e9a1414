// Which layers a compile quantizes, with which settings, and why the others
// stay floating point: the experiment's settings with the per-layer overrides
// applied.
#pragma once
#include <string>
#include <vector>

#include "qforge/compile.h"

namespace qforge {

// True when `name` or one of its parents ("layer4" for "layer4.0.conv1")
// matches the glob `pattern` (fnmatch; '*' also crosses dots).
bool layer_matches(const std::string& pattern, const std::string& name);

// One LayerPlan per quantizable layer, overrides applied from the least to the
// most specific key (globs by length, exact names last). A key that matches no
// layer is a ConfigError listing the closest layer names.
std::vector<LayerPlan> plan_layers(const std::vector<LayerInfo>& layers, const ExperimentConfig& config);

}  // namespace qforge
