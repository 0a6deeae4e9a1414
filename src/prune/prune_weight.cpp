#include "prune/prune_weight.h"

#include <ATen/ATen.h>

#include <cmath>

#include "quant/gptq.h"

namespace qforge {
namespace {

// A weight as rows whose consecutive columns form N:M groups: [out, in] as it
// is; a convolution's [out, in, k...] as [out·k..., in].
at::Tensor as_rows(const at::Tensor& w) {
  if (w.dim() <= 2) return w;
  std::vector<int64_t> order = {0};
  for (int64_t d = 2; d < w.dim(); ++d) order.push_back(d);
  order.push_back(1);
  return w.permute(order).reshape({-1, w.size(1)});
}

at::Tensor from_rows(const at::Tensor& rows, const at::Tensor& like) {
  if (like.dim() <= 2) return rows.reshape(like.sizes());
  std::vector<int64_t> permuted = {like.size(0)};
  for (int64_t d = 2; d < like.dim(); ++d) permuted.push_back(like.size(d));
  permuted.push_back(like.size(1));
  std::vector<int64_t> back(static_cast<size_t>(like.dim()));
  back[0] = 0;
  back[1] = like.dim() - 1;
  for (int64_t d = 2; d < like.dim(); ++d) back[static_cast<size_t>(d)] = d - 1;
  return rows.reshape(permuted).permute(back).contiguous();
}

// Keeps the entries of `score` ([rows, cols]) that score highest: `share`
// pruned over the whole tensor or within each row, or n of every m columns of
// each row. Ties go by position, so every rank keeps the same ones.
at::Tensor keep_highest(const at::Tensor& score, const LayerPruning& p, bool per_row) {
  at::Tensor mask = at::ones(score.sizes(), score.options().dtype(at::kBool));
  if (p.m > 0) {
    const at::Tensor groups = score.reshape({score.size(0), -1, p.m});
    const at::Tensor order = std::get<1>(at::sort(groups, /*stable=*/true, /*dim=*/2, /*descending=*/false));
    return mask.reshape(groups.sizes()).scatter_(2, order.narrow(2, 0, p.m - p.n), false).reshape(score.sizes());
  }
  const at::Tensor flat = per_row ? score : score.reshape({1, -1});
  const auto pruned = static_cast<int64_t>(std::llround(p.sparsity * static_cast<double>(flat.size(1))));
  if (pruned == 0) return mask;
  const at::Tensor order = std::get<1>(at::sort(flat, /*stable=*/true, /*dim=*/1, /*descending=*/false));
  return mask.reshape(flat.sizes()).scatter_(1, order.narrow(1, 0, pruned), false).reshape(score.sizes());
}

}  // namespace

PrunedWeight prune_weight(const at::Tensor& weight, const at::Tensor& hessian, const LayerPruning& pruning,
                          const PruningSettings& settings, const std::string& layer) {
  const at::Tensor w = weight.detach();
  if (pruning.m == 0 && pruning.sparsity == 0) return {w, at::ones(w.sizes(), w.options().dtype(at::kBool))};
  if (pruning.method == PruningMethod::SparseGpt) {
    SolveSparsity sparsity;
    sparsity.sparsity = pruning.sparsity;
    sparsity.n = pruning.n;
    sparsity.m = pruning.m;
    auto solved = sparsegpt_prune(w, hessian, sparsity, settings.dampening, settings.block_size, layer);
    return {solved.weight, solved.mask};
  }
  at::Tensor score = as_rows(w).abs().to(at::kDouble);
  if (pruning.method == PruningMethod::Wanda)  // |w_ij|·‖x_j‖, compared within each output row
    score = score * hessian.diagonal().to(score.device()).clamp_min(0).sqrt().unsqueeze(0);
  const at::Tensor mask = from_rows(keep_highest(score, pruning, pruning.method == PruningMethod::Wanda), w);
  return {w * mask.to(w.scalar_type()), mask};
}

double relative_output_error(const at::Tensor& dense, const at::Tensor& pruned, const at::Tensor& hessian) {
  const at::Tensor w = dense.detach().to(hessian.device(), at::kDouble);
  const at::Tensor delta = w - pruned.detach().to(hessian.device(), at::kDouble);
  const double whole = (w.mm(hessian) * w).sum().item<double>();
  return whole > 0 ? (delta.mm(hessian) * delta).sum().item<double>() / whole : 0.0;
}

}  // namespace qforge
