// pruning_settings.sensitivity_threshold: the layers of one step whose output
// error at the planned sparsity exceeds the threshold are pruned less (3/4,
// 1/2, 1/4 of it, or not at all; N:M: not at all), and the weights they keep
// are pruned instead in the step's other layers, the one that errs least
// first, while they stay below it: the planned share holds overall where it can.
#pragma once
#include <string>
#include <vector>

#include "qforge/compile.h"

namespace qforge {

struct SparsityChoice {
  std::string layer;
  int64_t weights = 0;
  std::vector<LayerPruning> candidates;  // sparsity_candidates(planned)
  std::vector<double> errors;            // the relative output error of each candidate
};

struct SparsityAllocation {
  std::vector<LayerPruning> chosen;  // one per layer
  std::vector<std::string> notes;    // what was pruned otherwise than planned, and why
};

// [planned, 3/4, 1/2, 1/4 of it, dense, then higher: 1/4 and 1/2 of the way to 1] (unstructured);
// [planned, dense] (N:M).
std::vector<LayerPruning> sparsity_candidates(const LayerPruning& planned);

// What the notes call the units allocated among: a block's layers, or the model's channel groups.
struct AllocationWords {
  std::string unit = "layer";                     // "layer 'fc1' errs ..."
  std::string others = "its block's other layers";  // "... for the weights <others> keep"
  std::string none = "no layer of it";            // "... stay that the plan prunes: <none> could take them"
  std::string scope;  // "<share> of the weights of <scope> stay ..."; empty: the step of its first layer
};

SparsityAllocation allocate_within_threshold(const std::vector<SparsityChoice>& layers, double threshold,
                                             const AllocationWords& words = {});

}  // namespace qforge
