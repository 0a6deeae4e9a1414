#include "compile/input_statistics.h"

#include <ATen/ATen.h>

#include "compile/per_batch_sums.h"
#include "graph/fake_quant_graph.h"
#include "graph/observe_op.h"

namespace qforge {
namespace {

// Runs the shard with an observer on each input: `observe(i, rows)` gets input
// i's rows ([n, channels]) and adds to `sums`, whose batch ends with the model's call.
void observe_inputs(const torch::jit::Module& model, const std::string& method,
                    const std::vector<ObservedInput>& inputs, const ForwardFn& run, const ShardSource& shard,
                    PerBatchSums& sums, const std::function<void(size_t, const at::Tensor&)>& observe) {
  std::vector<ObservedTensor> points;
  for (const auto& in : inputs) points.push_back({in.layer, false});
  torch::jit::Module observed = with_observers(model, method, points);
  ObserveScope scope([&](int64_t point, const at::Tensor& x) {
    const auto& in = inputs.at(static_cast<size_t>(point));
    const at::Tensor v = in.channels_first && x.dim() > 1 ? x.movedim(1, -1) : x;
    if (v.dim() == 0 || v.size(-1) != in.channels) return;
    observe(static_cast<size_t>(point), v.detach().reshape({-1, in.channels}));
  });
  for_each_batch(shard, [&](const Batch& batch) {
    run(observed, batch);
    sums.end_batch();
  });
}

}  // namespace

std::vector<ChannelStatistics> channel_statistics(const torch::jit::Module& model, const std::string& method,
                                                  const std::vector<ObservedInput>& inputs, const ForwardFn& run,
                                                  const ShardSource& shard, Communicator& comm, PhaseTimer& timer,
                                                  const std::string& phase) {
  std::vector<int64_t> widths;
  for (const auto& in : inputs) widths.push_back(in.channels);
  PerBatchSums sums(widths);
  at::Tensor max_abs = at::zeros({sums.size()}, at::kDouble);  // every input's, for one all-reduce
  at::Tensor rows = at::zeros({static_cast<int64_t>(inputs.size())}, at::kLong);
  std::vector<ChannelStatistics> out(inputs.size());
  timer.run(
      phase,
      [&] {
        observe_inputs(model, method, inputs, run, shard, sums, [&](size_t i, const at::Tensor& x) {
          const at::Tensor a = x.abs().to(at::kDouble);
          at::Tensor max_of_input = sums.slice(max_abs, i);
          max_of_input.copy_(at::maximum(max_of_input, a.amax(0).cpu()));
          sums.add(i, a.sum(0));
          rows[static_cast<int64_t>(i)] += x.size(0);
        });
      },
      [&] {
        comm.all_reduce(max_abs, {ReduceOp::Max});
        comm.all_reduce(rows);
        const auto totals = sums.reduce(comm);
        for (size_t i = 0; i < inputs.size(); ++i) {
          out[i].rows = rows[static_cast<int64_t>(i)].item<int64_t>();
          out[i].max_abs = sums.slice(max_abs, i).clone();
          out[i].mean_abs = totals[i] / static_cast<double>(std::max<int64_t>(out[i].rows, 1));
        }
      });
  return out;
}

std::vector<at::Tensor> candidate_errors(const torch::jit::Module& model, const std::string& method,
                                         const std::vector<ObservedInput>& inputs,
                                         const std::vector<std::vector<at::Tensor>>& candidates, const ForwardFn& run,
                                         const ShardSource& shard, Communicator& comm, PhaseTimer& timer,
                                         const std::string& phase) {
  std::vector<int64_t> widths;
  for (const auto& c : candidates) widths.push_back(static_cast<int64_t>(c.size()));
  PerBatchSums sums(widths);
  std::vector<at::Tensor> out;
  timer.run(
      phase,
      [&] {
        observe_inputs(model, method, inputs, run, shard, sums, [&](size_t i, const at::Tensor& x) {
          // In float64, so that a batch's sums come out alike wherever it runs.
          const at::Tensor rows = x.to(at::kDouble);
          std::vector<at::Tensor> errors;
          for (const auto& e : candidates[i]) errors.push_back(at::mm(rows, e.t()).square().sum());
          if (!errors.empty()) sums.add(i, at::stack(errors));
        });
      },
      [&] { out = sums.reduce(comm); });
  return out;
}

}  // namespace qforge
