#include "compile/taylor_importance.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "compile/per_batch_sums.h"
#include "graph/fuse_observations.h"
#include "graph/observe_op.h"
#include "graph/rewrite.h"
#include "qforge/errors.h"

namespace qforge {
namespace {

// While alive: gradients on, and every floating-point parameter of the module
// a leaf that requires them, so that the layers' inputs can be differentiated.
class GradientsThrough {
 public:
  explicit GradientsThrough(const torch::jit::Module& module) {
    for (at::Tensor p : module.parameters()) {
      if (!p.is_floating_point()) continue;
      parameters_.push_back(p);
      required_.push_back(p.requires_grad());
      p.requires_grad_(true);
    }
  }
  ~GradientsThrough() {
    for (size_t i = 0; i < parameters_.size(); ++i) parameters_[i].requires_grad_(required_[i]);
  }
  GradientsThrough(const GradientsThrough&) = delete;
  GradientsThrough& operator=(const GradientsThrough&) = delete;

 private:
  torch::AutoGradMode enabled_{true};
  std::vector<at::Tensor> parameters_;
  std::vector<bool> required_;
};

// The model with each observed layer reading a copy of its input made for it
// alone, the copy observed: the copy's gradient is what that layer's read
// contributes, where the input itself may also feed a residual add or another layer.
torch::jit::Module with_observed_input_copies(const torch::jit::Module& model, const std::string& method,
                                              const std::vector<ObservedInput>& inputs) {
  Rewrite rewrite(model, method);
  std::vector<ObservationSite> sites;
  for (size_t point = 0; point < inputs.size(); ++point)
    for (torch::jit::Node* read : rewrite.reads_of(inputs[point].layer, method))
      for (torch::jit::Node* layer : activation_users(read->output())) {
        torch::jit::WithInsertPoint before(layer);
        torch::jit::Value* copy = rewrite.graph->insert(c10::aten::clone, {layer->input(0)});
        layer->replaceInput(0, copy);
        sites.push_back({copy, layer, static_cast<int64_t>(point)});
      }
  insert_observations(rewrite.graph, sites, ObserveFusion::None);
  return rewrite.module;
}

// One input tensor a layer read during the batch.
struct Read {
  size_t input;
  at::Tensor x;
};

// t[n, c] of each input over the batch ([rows, width] float64), undefined for
// inputs no gradient reached.
std::vector<at::Tensor> taylor_terms(const std::vector<ObservedInput>& inputs, const std::vector<Read>& reads,
                                     const at::Tensor& loss) {
  std::vector<at::Tensor> terms(inputs.size());
  std::vector<const Read*> differentiable;
  std::vector<at::Tensor> xs;
  for (const auto& r : reads) {
    if (!r.x.requires_grad()) continue;
    differentiable.push_back(&r);
    xs.push_back(r.x);
  }
  if (reads.empty()) return terms;
  if (xs.empty() || !loss.requires_grad())
    throw ModelError("structured pruning (importance taylor): no gradient reaches the layers' inputs; "
                "the model's weights are not parameters (use importance: activation)");
  const auto grads = torch::autograd::grad({loss}, xs, {}, /*retain_graph=*/false, /*create_graph=*/false,
                                           /*allow_unused=*/true);
  for (size_t k = 0; k < differentiable.size(); ++k) {
    const Read& r = *differentiable[k];
    const ObservedInput& in = inputs[r.input];
    if (!grads[k].defined()) continue;
    // The copy is the layer's alone (with_observed_input_copies): nothing writes it after the read.
    at::Tensor product = grads[k].to(at::kDouble) * r.x.detach().to(at::kDouble);
    if (in.channels_first && product.dim() > 1) product = product.movedim(1, -1);
    if (product.dim() == 0 || product.size(-1) != in.channels) continue;
    const int64_t rows = product.dim() > 1 ? product.size(0) : 1;
    product = product.reshape({rows, -1, in.channels}).sum(1).cpu();
    at::Tensor& t = terms[r.input];
    t = t.defined() && t.sizes() == product.sizes() ? t + product : product;
  }
  return terms;
}

// A target's Σ over rows of (Σ over spans of t[n, c])²; readers that see a
// different number of rows (a layer run once per position) add their own squares.
at::Tensor target_scores(const SpannedChannels& target, const std::vector<at::Tensor>& terms) {
  at::Tensor scores = at::zeros({target.channels}, at::kDouble);
  at::Tensor summed;
  for (const auto& span : target.spans) {
    const at::Tensor& t = terms[span.input];
    if (!t.defined()) continue;
    const int64_t p = span.per_channel;
    const at::Tensor part =
        t.slice(1, span.offset * p, (span.offset + target.channels) * p).reshape({t.size(0), target.channels, p}).sum(2);
    if (!summed.defined())
      summed = part;
    else if (summed.size(0) == part.size(0))
      summed = summed + part;
    else
      scores.add_(part.square().sum(0));
  }
  if (summed.defined()) scores.add_(summed.square().sum(0));
  return scores;
}

}  // namespace

std::vector<at::Tensor> taylor_scores(const torch::jit::Module& model, const std::string& method,
                                      const std::vector<ObservedInput>& inputs,
                                      const std::vector<SpannedChannels>& targets, const ForwardFn& run,
                                      const BatchLoss& loss, const ShardSource& shard, Communicator& comm,
                                      PhaseTimer& timer, const std::string& phase) {
  std::vector<int64_t> widths;
  for (const auto& t : targets) widths.push_back(t.channels);
  PerBatchSums sums(widths);
  std::vector<at::Tensor> out;
  timer.run(
      phase,
      [&] {
        torch::jit::Module observed = with_observed_input_copies(model, method, inputs);
        GradientsThrough gradients(observed);
        std::vector<Read> reads;
        ObserveScope scope([&](int64_t point, const at::Tensor& x) { reads.push_back({static_cast<size_t>(point), x}); });
        for_each_batch(shard, [&](const Batch& batch) {
          reads.clear();
          const at::Tensor l = loss(run(observed, batch), batch);
          const auto terms = taylor_terms(inputs, reads, l);
          reads.clear();  // the batch's graph goes with them
          for (size_t i = 0; i < targets.size(); ++i) sums.add(i, target_scores(targets[i], terms));
          sums.end_batch();
        });
      },
      [&] { out = sums.reduce(comm); });
  return out;
}

}  // namespace qforge
