#include "compile/evaluation.h"

#include <ATen/ATen.h>

#include <cmath>

#include "metrics/predictions.h"

namespace qforge {

double EvaluationResult::fp_perplexity() const { return labelled ? std::exp(fp_nll / labelled) : 0.0; }
double EvaluationResult::compiled_perplexity() const { return labelled ? std::exp(compiled_nll / labelled) : 0.0; }

void add_batch(EvaluationSums& sums, const c10::IValue& expected, const c10::IValue& actual, const Batch& batch) {
  sums.error.add(expected, actual);
  sums.counts.rows += batch.rows();
  const auto fp = prediction_logits(expected, batch.rows());
  const auto q = prediction_logits(actual, batch.rows());
  if (!fp || !q) return;
  sums.counts.sequence = expected.toTensor().dim() == 3;
  sums.counts.predictions += fp->size(0);
  const auto fp_class = fp->argmax(1), q_class = q->argmax(1);
  sums.counts.top1_agreement += fp_class.eq(q_class).sum().item<int64_t>();
  if (const auto labels = class_labels(batch.labels, expected.toTensor())) {
    sums.counts.labelled += labels->numel();
    sums.counts.fp_correct += fp_class.eq(*labels).sum().item<int64_t>();
    sums.counts.compiled_correct += q_class.eq(*labels).sum().item<int64_t>();
    const auto nll = [&](const at::Tensor& l) {
      return at::cross_entropy_loss(l.to(at::kDouble), *labels, {}, at::Reduction::Sum).item<double>();
    };
    sums.counts.fp_nll += nll(*fp);
    sums.counts.compiled_nll += nll(*q);
  }
}

EvaluationSums evaluate_shard(torch::jit::Module& reference, torch::jit::Module& compiled, const ForwardFn& run,
                              const ShardSource& shard) {
  EvaluationSums sums;
  for_each_batch(shard,
                 [&](const Batch& batch) { add_batch(sums, run(reference, batch), run(compiled, batch), batch); });
  return sums;
}

EvaluationResult reduce_evaluation(const EvaluationSums& mine, Communicator& comm) {
  const auto& c = mine.counts;
  at::Tensor counts = at::tensor({c.rows, c.predictions, c.labelled, c.fp_correct, c.compiled_correct, c.top1_agreement,
                                  static_cast<int64_t>(c.sequence)},
                                 at::kLong);
  at::Tensor sums =
      at::tensor({mine.error.error_squares, mine.error.reference_squares, c.fp_nll, c.compiled_nll}, at::kDouble);
  comm.all_reduce(counts);
  comm.all_reduce(sums);
  EvaluationResult r;
  const auto* n = counts.data_ptr<int64_t>();
  r.rows = n[0];
  r.predictions = n[1];
  r.labelled = n[2];
  r.fp_correct = n[3];
  r.compiled_correct = n[4];
  r.top1_agreement = n[5];
  r.sequence = n[6] > 0;
  const auto* s = sums.data_ptr<double>();
  r.fp_nll = s[2];
  r.compiled_nll = s[3];
  OutputError total{s[0], s[1]};
  r.output_sqnr_db = total.sqnr_db();
  return r;
}

}  // namespace qforge
