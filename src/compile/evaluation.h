// The compiled model against the floating-point model on held-out samples
// (evaluation_inputs), each rank on its shard, sums reduced across ranks:
// top-1 agreement and output SQNR; top-1 accuracy and cross-entropy of both
// where the file has labels and the output is [batch, classes] logits or a
// language model's [batch, positions, vocabulary] (perplexity).
#pragma once
#include "data/batches.h"
#include "metrics/output_error.h"
#include "qforge/compile.h"
#include "runtime/communicator.h"

namespace qforge {

// This rank's sums (local; run inside a collective phase).
struct EvaluationSums {
  EvaluationResult counts;
  OutputError error;
};
// Adds one batch: `expected` (the reference's output) against `actual`.
void add_batch(EvaluationSums& sums, const c10::IValue& expected, const c10::IValue& actual, const Batch& batch);

EvaluationSums evaluate_shard(torch::jit::Module& reference, torch::jit::Module& compiled, const ForwardFn& run,
                              const ShardSource& shard);

// Collective: the totals over every rank.
EvaluationResult reduce_evaluation(const EvaluationSums& mine, Communicator& comm);

}  // namespace qforge
