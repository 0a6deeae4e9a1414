#include "quant/gptq.h"

#include <ATen/ATen.h>

#include <cmath>
#include <utility>
#include <vector>

#include "qforge/errors.h"
#include "quant/observer.h"
#include "quant/quantization.h"
#include "runtime/exact_sum.h"

namespace qforge {

using at::indexing::Slice;

// ---- the Hessian -----------------------------------------------------------

HessianSum::HessianSum(int64_t inputs, double max_abs, int64_t vectors, const c10::Device& device)
    : inputs_(inputs), vectors_(std::max<int64_t>(vectors, 1)) {
  // An entry of a batch's XᵀX is at most rows·max_abs²: on the grid of N
  // items of at most max_abs², the sum over all N rows stays below 2^61.
  exponent_ = fixed_point_exponent(max_abs * max_abs, vectors_);
  sums_ = at::zeros({inputs, inputs}, at::TensorOptions().dtype(at::kLong).device(device));
}

void HessianSum::add(const at::Tensor& x) {
  const at::Tensor rows = x.detach().reshape({-1, inputs_}).to(sums_.device(), at::kDouble);
  // Scaling by a power of two is exact; only the rounding to the grid is not,
  // and it happens per batch, identically wherever the batch is computed.
  sums_ += at::round(at::mm(rows.t(), rows) * std::ldexp(1.0, exponent_)).to(at::kLong);
}

at::Tensor HessianSum::hessian() const {
  return sums_.to(at::kDouble) * (std::ldexp(1.0, -exponent_) / static_cast<double>(vectors_));
}

// ---- the solve ---------------------------------------------------------------

namespace {

// The quantization parameters of the columns as the solve meets them.
class ColumnParams {
 public:
  ColumnParams(const at::Tensor& weight, const TensorQuantSettings& settings, const at::Tensor& order)
      : settings_(settings), range_(quant_range(settings.bits, settings.is_signed)), order_(order) {
    if (settings.granularity != Granularity::Group) {
      whole_ = observe_weight(weight, settings);
    } else {
      groups_.resize(static_cast<size_t>(weight.size(1) / settings.group_size));
      if (order_.defined())  // act_order: every group's parameters from the weight before the solve
        for (int64_t g = 0; g < static_cast<int64_t>(groups_.size()); ++g)
          set_group(g, weight.index({Slice(), Slice(g * group_size(), (g + 1) * group_size())}));
    }
  }

  int64_t group_size() const { return settings_.group_size; }
  bool groups_follow_solve() const { return settings_.granularity == Granularity::Group && !order_.defined(); }
  void set_group(int64_t group, const at::Tensor& columns) {
    TensorQuantSettings per_row = settings_;
    per_row.granularity = Granularity::Channel;
    groups_[static_cast<size_t>(group)] = observe_weight(columns, per_row).qparams;
  }

  // Column `column` (in solve order) rounded onto its grid, as ATen's fake-quant ops round.
  at::Tensor round(const at::Tensor& w, int64_t column) const {
    const at::Tensor x = w.to(at::kFloat).unsqueeze(1);
    at::Tensor q;
    if (settings_.granularity == Granularity::Tensor) {
      q = fake_quantize(x, whole_.qparams, range_, -1);
    } else if (settings_.granularity == Granularity::Channel) {
      q = fake_quantize(x, whole_.qparams, range_, 0);
    } else {
      const int64_t original = order_.defined() ? order_[column].item<int64_t>() : column;
      q = fake_quantize(x, groups_[static_cast<size_t>(original / group_size())], range_, 0);
    }
    return q.squeeze(1).to(at::kDouble);
  }

  // The parameters in observe_weight's layout: groups row-major over [out, groups].
  WeightQuant result(const at::Tensor& weight) const {
    if (settings_.granularity != Granularity::Group) return whole_;
    WeightQuant out;  // observe_weight's group layout: the [out * groups, group_size] view, per row
    out.axis = 0;
    out.view_shape = {weight.size(0) * static_cast<int64_t>(groups_.size()), group_size()};
    std::vector<at::Tensor> scales, zero_points;
    for (const auto& g : groups_) {
      scales.push_back(g.scale);
      zero_points.push_back(g.zero_point);
    }
    out.qparams.scale = at::stack(scales, 1).reshape({-1}).contiguous();
    out.qparams.zero_point = at::stack(zero_points, 1).reshape({-1}).contiguous();
    return out;
  }

 private:
  TensorQuantSettings settings_;
  QuantRange range_;
  at::Tensor order_;  // act_order: original column of each solve position (CPU)
  WeightQuant whole_;
  std::vector<QParams> groups_;
};

// The upper Cholesky factor of H⁻¹ after dampening; ModelError when H is not positive definite.
at::Tensor inverse_hessian_factor(at::Tensor h, double dampening, const std::string& layer,
                                  const std::string& dampening_key, const std::string& instead) {
  const double damp = dampening * h.diagonal().mean().item<double>();
  h.diagonal().add_(damp);
  auto [lower, info] = at::linalg_cholesky_ex(h);
  at::Tensor factor;
  if (info.item<int64_t>() == 0) std::tie(factor, info) = at::linalg_cholesky_ex(at::cholesky_inverse(lower), true);
  if (info.item<int64_t>() != 0)
    throw ModelError("layer '" + layer + "': the Hessian of the layer's inputs is not positive definite with " +
                     "dampening " + std::to_string(dampening) + " (its inputs are linearly dependent); raise " +
                     dampening_key + ", or set " + instead + " for this layer in layer_quantization_settings");
  return factor;
}

// Block size rounded to whole groups, so a group's columns are all in one block.
int64_t solve_block(const WeightQuantSettings& settings, int64_t columns) {
  int64_t block = std::min(settings.gptq.block_size, columns);
  if (settings.granularity == Granularity::Group)
    block = std::max<int64_t>(block / settings.group_size, 1) * settings.group_size;
  return block;
}

// Which weights of the columns a solve reaches stay (true) or become zero:
// held from an earlier pruning, or chosen as the solve goes (SparseGPT) where
// removing them costs least, w² / [H⁻¹]²ⱼⱼ, on the weights as updated so far.
class ColumnMask {
 public:
  ColumnMask(const SolveSparsity& sparsity, const at::Tensor& w) : sparsity_(sparsity) {
    if (sparsity.held.defined()) mask_ = sparsity.held.to(w.device(), at::kBool).reshape(w.sizes()).clone();
    if (sparsity.chooses()) mask_ = at::ones(w.sizes(), w.options().dtype(at::kBool));
  }
  bool active() const { return mask_.defined(); }
  const at::Tensor& mask() const { return mask_; }
  void permute(const at::Tensor& order) {
    if (mask_.defined()) mask_ = mask_.index_select(1, order);
  }
  // Unstructured: a block's share of its weights, at the block's start.
  void start_block(const at::Tensor& wb, const at::Tensor& ub, int64_t b0) {
    if (!sparsity_.chooses() || sparsity_.m > 0) return;
    const at::Tensor cost = wb.square() / ub.diagonal().square().unsqueeze(0);
    const int64_t pruned = static_cast<int64_t>(std::llround(sparsity_.sparsity * static_cast<double>(cost.numel())));
    prune_least(cost.reshape({-1}), pruned, mask_.narrow(1, b0, wb.size(1)));
  }
  // N:M: every M columns, the M-N weights of each row that cost least.
  void start_column(const at::Tensor& wb, const at::Tensor& ub, int64_t i, int64_t column) {
    if (!sparsity_.chooses() || sparsity_.m == 0 || column % sparsity_.m != 0) return;
    const int64_t m = sparsity_.m;
    const at::Tensor cost = wb.narrow(1, i, m).square() / ub.diagonal().narrow(0, i, m).square().unsqueeze(0);
    const at::Tensor order = std::get<1>(at::sort(cost, /*stable=*/true, /*dim=*/1, /*descending=*/false));
    mask_.narrow(1, column, m).scatter_(1, order.narrow(1, 0, m - sparsity_.n), false);
  }
  at::Tensor apply(const at::Tensor& value, int64_t column) const {
    return mask_.defined() ? value * mask_.select(1, column).to(value.scalar_type()) : value;
  }
  // Columns [first, first + n) as they will be kept: a group's parameters see no pruned weight.
  at::Tensor kept(const at::Tensor& columns, int64_t first) const {
    return mask_.defined() ? columns * mask_.narrow(1, first, columns.size(1)).to(columns.scalar_type()) : columns;
  }

 private:
  // The `count` entries of `cost` (flattened over `mask`) that cost least leave `mask`; ties by position.
  static void prune_least(const at::Tensor& cost, int64_t count, at::Tensor mask) {
    if (count <= 0) return;
    const at::Tensor order = std::get<1>(at::sort(cost, /*stable=*/true, /*dim=*/0, /*descending=*/false));
    at::Tensor flat = at::ones({cost.numel()}, mask.options());
    flat.index_fill_(0, order.narrow(0, 0, count), false);
    mask.copy_(flat.reshape(mask.sizes()));
  }
  SolveSparsity sparsity_;
  at::Tensor mask_;
};

// The solve GPTQ and SparseGPT share (optimal brain surgery one column at a
// time): each column takes its value (rounded onto the grid, and zero where
// the mask prunes it), and its error is spread over the columns after it
// through the upper Cholesky factor `u` of H⁻¹. `round` may be empty (no quantization).
at::Tensor solve_columns(at::Tensor w, const at::Tensor& u, int64_t block, ColumnParams* round, ColumnMask& mask) {
  const int64_t columns = w.size(1);
  at::Tensor q = at::zeros_like(w);
  for (int64_t b0 = 0; b0 < columns; b0 += block) {
    const int64_t b1 = std::min(b0 + block, columns);
    at::Tensor wb = w.index({Slice(), Slice(b0, b1)}).clone();
    at::Tensor errors = at::zeros_like(wb);
    const at::Tensor ub = u.index({Slice(b0, b1), Slice(b0, b1)});
    mask.start_block(wb, ub, b0);
    for (int64_t i = 0; i < b1 - b0; ++i) {
      const int64_t column = b0 + i;
      mask.start_column(wb, ub, i, column);
      if (round && round->groups_follow_solve() && column % round->group_size() == 0)
        round->set_group(column / round->group_size(),
                         mask.kept(wb.index({Slice(), Slice(i, i + round->group_size())}), column));
      const at::Tensor wi = wb.select(1, i);
      const at::Tensor qi = mask.apply(round ? round->round(wi, column) : wi, column);
      q.select(1, column).copy_(qi);
      const at::Tensor error = (wi - qi) / ub[i][i];
      wb.index({Slice(), Slice(i, at::indexing::None)}) -=
          error.unsqueeze(1).mm(ub.index({i, Slice(i, at::indexing::None)}).unsqueeze(0));
      errors.select(1, i).copy_(error);
    }
    if (b1 < columns)
      w.index({Slice(), Slice(b1, at::indexing::None)}) -=
          errors.mm(u.index({Slice(b0, b1), Slice(b1, at::indexing::None)}));
  }
  return q;
}

// The weight and Hessian in float64, inputs that are always zero removed
// (they carry no information: their weights become zero).
std::pair<at::Tensor, at::Tensor> solve_inputs(const at::Tensor& weight, const at::Tensor& hessian,
                                               const std::string& layer, const char* algorithm) {
  if (weight.dim() != 2 || hessian.dim() != 2 || hessian.size(0) != weight.size(1) || hessian.size(1) != weight.size(1))
    throw ModelError("layer '" + layer + "': " + algorithm +
                     " needs a [outputs, inputs] weight and an [inputs, inputs] Hessian");
  at::Tensor w = weight.detach().to(at::kDouble).clone();
  at::Tensor h = hessian.to(w.device(), at::kDouble).clone();
  const at::Tensor dead = h.diagonal() == 0;
  h.diagonal().masked_fill_(dead, 1.0);
  w.index_put_({Slice(), dead}, 0.0);
  return {w, h};
}

}  // namespace

bool gptq_applies(const LayerInfo& layer) { return layer.linear; }

GptqResult gptq_quantize(const at::Tensor& weight, const at::Tensor& hessian, const WeightQuantSettings& settings,
                         const std::string& layer, const SolveSparsity& sparsity) {
  auto [w, h] = solve_inputs(weight, hessian, layer, "GPTQ");
  at::Tensor order;  // act_order: solve position -> original column
  if (settings.gptq.act_order)
    order = std::get<1>(at::sort(h.diagonal(), /*stable=*/true, /*dim=*/0, /*descending=*/true));
  ColumnParams params(w, settings, order.defined() ? order.cpu() : at::Tensor());  // from the weight in its order
  ColumnMask mask(sparsity, w);
  if (order.defined()) {
    w = w.index_select(1, order);
    h = h.index_select(0, order).index_select(1, order);
    mask.permute(order);
  }
  const at::Tensor u = inverse_hessian_factor(h, settings.gptq.dampening, layer,
                                              "quantization_settings.weights.gptq.dampening", "weights.algorithm: rtn");
  at::Tensor q = solve_columns(w, u, solve_block(settings, w.size(1)), &params, mask);
  if (order.defined()) q = q.index_select(1, at::argsort(order));
  GptqResult result;
  result.weight = q.to(weight.scalar_type()).reshape(weight.sizes());
  result.quant = params.result(weight.detach());
  return result;
}

SparseGptResult sparsegpt_prune(const at::Tensor& weight, const at::Tensor& hessian, const SolveSparsity& sparsity,
                                double dampening, int64_t block_size, const std::string& layer) {
  auto [w, h] = solve_inputs(weight, hessian, layer, "SparseGPT");
  ColumnMask mask(sparsity, w);
  const at::Tensor u =
      inverse_hessian_factor(h, dampening, layer, "pruning_settings.dampening", "pruning.method: magnitude");
  const at::Tensor pruned = solve_columns(w, u, std::min(block_size, w.size(1)), nullptr, mask);
  return {pruned.to(weight.scalar_type()).reshape(weight.sizes()), mask.mask().reshape(weight.sizes())};
}

}  // namespace qforge
