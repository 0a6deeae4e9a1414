#include "compile/evaluation.h"

#include <ATen/ATen.h>

namespace qforge {
namespace {

// The logits of an output when it is one [batch, classes] tensor.
std::optional<at::Tensor> logits(const c10::IValue& output, int64_t rows) {
  if (!output.isTensor()) return std::nullopt;
  const auto& t = output.toTensor();
  if (t.dim() != 2 || t.size(0) != rows || t.size(1) < 2) return std::nullopt;
  return t;
}

}  // namespace

EvaluationSums evaluate_shard(torch::jit::Module& reference, torch::jit::Module& compiled, const Runner& run,
                              const ShardSource& shard) {
  EvaluationSums sums;
  for_each_batch(shard, [&](const Batch& batch) {
    const auto expected = run(reference, batch);
    const auto actual = run(compiled, batch);
    sums.error.add(expected, actual);
    sums.counts.rows += batch.rows();
    const auto fp = logits(expected, batch.rows());
    const auto q = logits(actual, batch.rows());
    if (!fp || !q) return;
    const auto fp_class = fp->argmax(1), q_class = q->argmax(1);
    sums.counts.top1_agreement += fp_class.eq(q_class).sum().item<int64_t>();
    if (batch.labels.defined() && batch.labels.dim() == 1) {
      const auto labels = batch.labels.to(at::kLong);
      sums.counts.labelled_rows += batch.rows();
      sums.counts.fp_correct += fp_class.eq(labels).sum().item<int64_t>();
      sums.counts.compiled_correct += q_class.eq(labels).sum().item<int64_t>();
    }
  });
  return sums;
}

EvaluationResult reduce_evaluation(const EvaluationSums& mine, Communicator& comm) {
  const auto& c = mine.counts;
  at::Tensor counts = at::tensor({c.rows, c.labelled_rows, c.fp_correct, c.compiled_correct, c.top1_agreement}, at::kLong);
  at::Tensor squares = at::tensor({mine.error.error_squares, mine.error.reference_squares}, at::kDouble);
  comm.all_reduce(counts, ReduceOp::Sum);
  comm.all_reduce(squares, ReduceOp::Sum);
  EvaluationResult r;
  const auto* n = counts.data_ptr<int64_t>();
  r.rows = n[0];
  r.labelled_rows = n[1];
  r.fp_correct = n[2];
  r.compiled_correct = n[3];
  r.top1_agreement = n[4];
  OutputError total{squares[0].item<double>(), squares[1].item<double>()};
  r.output_sqnr_db = total.sqnr_db();
  return r;
}

}  // namespace qforge
