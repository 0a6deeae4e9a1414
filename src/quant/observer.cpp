#include "quant/observer.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "qforge/errors.h"
#include "qforge_version_config.h"
#if QFORGE_HAVE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "quant/histogram_cuda.h"
#endif

namespace qforge {

ActivationObserver::ActivationObserver(const TensorQuantSettings& settings)
    : settings_(settings),
      min_(std::numeric_limits<double>::infinity()),
      max_(-std::numeric_limits<double>::infinity()) {}

bool ActivationObserver::needs_histogram() const { return settings_.observer != Observer::MinMax; }

void ActivationObserver::observe(const at::Tensor& x_in, const at::Tensor& partial_extrema) {
  at::Tensor x = x_in.detach();
  if (x.numel() == 0) return;
  finished_ = false;
  x = x.reshape({-1});
  const bool convert = x.scalar_type() != at::kFloat && x.scalar_type() != at::kDouble;  // half, bf16
  // Min and max of half and bf16 are exact in float32: the range needs no
  // converted copy, only the histogram's counting does.
  const bool from_extrema = partial_extrema.defined() && !(convert && needs_histogram());
  if (convert && !from_extrema) x = x.to(at::kFloat);
  observe_range(x, from_extrema ? partial_extrema : at::Tensor());
  if (needs_histogram()) count(x, extrema_.select(0, extrema_used_ - 1));
}

// Min and max are exact in any floating type; one aminmax kernel writes them
// into the next free slot, so an observation costs one launch, not three.
// From a fused op's per-block extrema, two small reductions write them.
void ActivationObserver::observe_range(const at::Tensor& x, const at::Tensor& partial_extrema) {
  constexpr int64_t slots = 64;
  const at::TensorOptions options =
      partial_extrema.defined() ? partial_extrema.options() : x.options();  // float32, or x's type
  if (extrema_.defined() &&
      (extrema_used_ == slots || extrema_.dtype() != options.dtype() || extrema_.device() != options.device()))
    fold_extrema();
  if (!extrema_.defined()) extrema_ = at::empty({slots, 2}, options);
  at::Tensor lo = extrema_.select(0, extrema_used_).select(0, 0), hi = extrema_.select(0, extrema_used_).select(0, 1);
  if (partial_extrema.defined()) {
    at::amin_out(lo, partial_extrema.select(0, 0));
    at::amax_out(hi, partial_extrema.select(0, 1));
  } else {
    at::aminmax_out(lo, hi, x);
  }
  ++extrema_used_;
}

void ActivationObserver::fold_extrema() const {
  if (!extrema_.defined()) return;
  const at::Tensor filled = extrema_.narrow(0, 0, extrema_used_).to(at::kDouble);  // exact
  const at::Tensor lo = filled.select(1, 0).min(), hi = filled.select(1, 1).max();
  pending_min_ = pending_min_.defined() ? at::minimum(pending_min_, lo) : lo;
  pending_max_ = pending_max_.defined() ? at::maximum(pending_max_, hi) : hi;
  extrema_ = at::Tensor();
  extrema_used_ = 0;
}

// On the host grid: the batch's range decides the grid (a wait for a GPU),
// bins are floor(t · 2^-e) in x's own type, counted by bincount.
void ActivationObserver::count(const at::Tensor& x, const at::Tensor& batch_range) {
  if (x.is_cuda() && count_with_kernel(x, batch_range)) return;
  const at::Tensor range = batch_range.to(at::kCPU, at::kDouble);
  const double lo = range[0].item<double>(), hi = range[1].item<double>();
  if (!std::isfinite(lo) || !std::isfinite(hi)) return;  // no histogram is chosen from a range that is not finite
  const GridShape shape = grid_shape(settings_.histogram_bins, settings_.symmetric);
  widen(window_, std::max(window_.exponent, grid_exponent(std::max(std::abs(lo), std::abs(hi)), shape)), shape);
  const at::Tensor t = settings_.symmetric ? x.abs() : x;
  const at::Tensor bins =
      t.mul(std::ldexp(1.0, -window_.exponent))  // 2^-e: exact in float32 too
          .floor_()
          .clamp_(static_cast<double>(-shape.offset()), static_cast<double>(shape.bins() - 1 - shape.offset()))
          .add_(static_cast<double>(shape.offset()))
          .to(at::kLong);
  const at::Tensor counted = at::bincount(bins, {}, shape.bins()).to(at::kCPU).contiguous();
  const int64_t* c = counted.data_ptr<int64_t>();
  for (size_t b = 0; b < window_.counts.size(); ++b) window_.counts[b] += c[b];
}

// qforge's kernels grow the grid and count on the device, without waiting
// for it: the GPU's bins are the CPU's.
bool ActivationObserver::count_with_kernel(const at::Tensor& x, const at::Tensor& batch_range) {
#if QFORGE_HAVE_CUDA_KERNELS
  if (x.scalar_type() != at::kFloat) return false;
  const GridShape shape = grid_shape(settings_.histogram_bins, settings_.symmetric);
  if (!histogram_kernel_fits(shape.bins(), x.get_device())) return false;
  const c10::cuda::CUDAGuard on_device(x.device());
  if (device_window_.defined() && device_window_.device() != x.device()) settle();
  if (!device_window_.defined()) {
    device_window_ = at::zeros({shape.bins()}, x.options().dtype(at::kLong));
    device_exponent_ = at::full({1}, kNoGrid, x.options().dtype(at::kInt));
  }
  const at::Tensor values = x.contiguous();
  const at::Tensor scratch = at::empty_like(device_window_);
  void* stream = c10::cuda::getCurrentCUDAStream().stream();
  widen_grid_cuda(batch_range.data_ptr<float>(), shape, device_exponent_.data_ptr<int32_t>(),
                  device_window_.data_ptr<int64_t>(), scratch.data_ptr<int64_t>(), stream);
  count_on_grid_cuda(values.data_ptr<float>(), values.numel(), shape, device_exponent_.data_ptr<int32_t>(),
                     device_window_.data_ptr<int64_t>(), stream);
  return true;
#else
  return false;
#endif
}

void ActivationObserver::settle() const {
  fold_extrema();
  if (pending_min_.defined()) {
    min_ = std::min(min_, pending_min_.item<double>());
    max_ = std::max(max_, pending_max_.item<double>());
    pending_min_ = pending_max_ = at::Tensor();
  }
  if (device_window_.defined()) {
    HistogramWindow counted;
    counted.exponent = device_exponent_.item<int32_t>();
    if (counted.exponent != kNoGrid) {
      const at::Tensor c = device_window_.to(at::kCPU).contiguous();
      counted.counts.assign(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
      merge(window_, std::move(counted), grid_shape(settings_.histogram_bins, settings_.symmetric));
    }
    device_window_ = device_exponent_ = at::Tensor();
  }
}

void ActivationObserver::finish_histogram() const {
  settle();
  if (finished_) return;
  finished_ = true;
  counts_.clear();
  grid_lo_ = grid_hi_ = 0;
  if (!needs_histogram() || !std::isfinite(min_) || !std::isfinite(max_)) return;
  FinishedHistogram h = finish(window_, min_, max_, grid_shape(settings_.histogram_bins, settings_.symmetric));
  counts_ = std::move(h.counts);
  grid_lo_ = h.lo;
  grid_hi_ = h.hi;
}

void reduce_ranges(std::vector<ActivationObserver>& observers, Communicator* comm) {
  for (const auto& o : observers) o.settle();
  if (!comm || observers.empty()) return;
  const int64_t n = static_cast<int64_t>(observers.size());
  at::Tensor packed = at::empty({2 * n}, at::kDouble);
  double* values = packed.data_ptr<double>();
  for (int64_t i = 0; i < n; ++i) {
    values[i] = observers[i].min_;
    values[n + i] = -observers[i].max_;  // MIN of -max is -(MAX of max), exactly
  }
  comm->all_reduce(packed, {ReduceOp::Min});
  values = packed.data_ptr<double>();
  for (int64_t i = 0; i < n; ++i) {
    observers[i].min_ = values[i];
    observers[i].max_ = -values[n + i];
    observers[i].finished_ = false;
  }
}

bool ActivationObserver::gathers_like(const ActivationObserver& other) const {
  return needs_histogram() == other.needs_histogram() && settings_.symmetric == other.settings_.symmetric &&
         settings_.histogram_bins == other.settings_.histogram_bins;
}

void ActivationObserver::take_statistics(const ActivationObserver& other) {
  other.settle();
  min_ = other.min_;
  max_ = other.max_;
  window_ = other.window_;
  finished_ = other.finished_;
  grid_lo_ = other.grid_lo_;
  grid_hi_ = other.grid_hi_;
  counts_ = other.counts_;
  pending_min_ = pending_max_ = device_window_ = device_exponent_ = extrema_ = at::Tensor();
  extrema_used_ = 0;
}

// Each rank puts its counts on the grid of the reduced range, which every
// rank computes alike, so the packed bins line up.
void reduce_histograms(std::vector<ActivationObserver>& observers, Communicator* comm) {
  std::vector<ActivationObserver*> counting;
  int64_t bins = 0;
  for (auto& o : observers) {
    o.finish_histogram();
    if (o.counts_.empty()) continue;
    counting.push_back(&o);
    bins += static_cast<int64_t>(o.counts_.size());
  }
  if (!comm || counting.empty()) return;
  at::Tensor packed = at::empty({bins}, at::kLong);
  int64_t* to = packed.data_ptr<int64_t>();
  for (const auto* o : counting) to = std::copy(o->counts_.begin(), o->counts_.end(), to);
  comm->all_reduce(packed);
  const int64_t* from = packed.data_ptr<int64_t>();
  for (auto* o : counting) {
    std::copy(from, from + o->counts_.size(), o->counts_.begin());
    from += o->counts_.size();
  }
}

ActivationObserver::Result ActivationObserver::compute() const {
  settle();
  if (!std::isfinite(min_) || !std::isfinite(max_)) throw Error("observer: no finite values observed");
  const QuantRange range = quant_range(settings_.bits, settings_.is_signed);
  Result r;
  r.lo = min_;
  r.hi = max_;
  if (needs_histogram()) {
    finish_histogram();
    // The grid's last edge may lie past the largest value: no range goes beyond what was seen.
    const double amax = std::max(std::abs(min_), std::abs(max_));
    switch (settings_.observer) {
      case Observer::Percentile:
        if (settings_.symmetric) {
          const double t = std::min(percentile_threshold(counts_, grid_lo_, grid_hi_, settings_.percentile), amax);
          r.lo = -t;
          r.hi = t;
        } else {
          r.lo =
              std::clamp(percentile_threshold(counts_, grid_lo_, grid_hi_, 100.0 - settings_.percentile), min_, max_);
          r.hi = std::clamp(percentile_threshold(counts_, grid_lo_, grid_hi_, settings_.percentile), min_, max_);
        }
        break;
      case Observer::Entropy: {
        // KL calibration works on |x|; an asymmetric scheme keeps the sign's side.
        const double t =
            settings_.symmetric ? std::min(entropy_threshold(counts_, grid_hi_, settings_.bits), amax) : amax;
        r.lo = settings_.symmetric ? -t : std::max(min_, -t);
        r.hi = settings_.symmetric ? t : std::min(max_, t);
        break;
      }
      case Observer::Mse: {
        const auto [lo, hi] = mse_range(counts_, grid_lo_, grid_hi_, settings_.symmetric ? -amax : min_, max_, range,
                                        settings_.symmetric);
        r.lo = settings_.symmetric ? -hi : lo;
        r.hi = hi;
        break;
      }
      default: break;
    }
  }
  r.qparams = qparams_from_range(at::full({1}, r.lo, at::kDouble), at::full({1}, r.hi, at::kDouble), range,
                                 settings_.symmetric);
  return r;
}

double percentile_threshold(const std::vector<int64_t>& counts, double lo, double hi, double percentile) {
  int64_t total = 0;
  for (auto c : counts) total += c;
  if (total == 0) return hi;
  const double width = (hi - lo) / static_cast<double>(counts.size());
  const double target = percentile / 100.0 * static_cast<double>(total);
  int64_t cumulative = 0;
  for (size_t b = 0; b < counts.size(); ++b) {
    cumulative += counts[b];
    if (static_cast<double>(cumulative) >= target) return lo + width * static_cast<double>(b + 1);
  }
  return hi;
}

std::pair<double, double> mse_range(const std::vector<int64_t>& counts, double lo, double hi, double observed_lo,
                                    double observed_hi, const QuantRange& range, bool symmetric) {
  // Bin centres weighted by their counts stand for the data; symmetric
  // histograms hold |x|, whose negative side mirrors the positive one.
  const int64_t bins = static_cast<int64_t>(counts.size());
  const double width = (hi - lo) / static_cast<double>(bins);
  const at::Tensor centres = (at::arange(bins, at::kDouble) + 0.5) * width + lo;
  const at::Tensor weights = at::tensor(counts, at::kLong).to(at::kDouble);
  // Candidates shrink the observed range in 1% steps down to 20% of it.
  const double top = symmetric ? std::max(std::abs(observed_lo), std::abs(observed_hi)) : observed_hi;
  double best_error = std::numeric_limits<double>::infinity();
  std::pair<double, double> best{symmetric ? 0.0 : observed_lo, top};
  for (int step = 100; step >= 20; --step) {
    const double f = step / 100.0;
    const double c_lo = symmetric ? -std::max(top * f, 0.0) : std::min(observed_lo * f, 0.0);
    const double c_hi = std::max(top * f, 0.0);
    const QParams q =
        qparams_from_range(at::full({1}, c_lo, at::kDouble), at::full({1}, c_hi, at::kDouble), range, symmetric);
    const at::Tensor y = fake_quantize(centres.to(at::kFloat), q, range).to(at::kDouble);
    const double error = (weights * (centres - y).pow(2)).sum().item<double>();
    if (error < best_error) {
      best_error = error;
      best = {symmetric ? 0.0 : c_lo, c_hi};
    }
  }
  return best;
}

WeightQuant observe_weight(const at::Tensor& weight, const TensorQuantSettings& settings) {
  const QuantRange range = quant_range(settings.bits, settings.is_signed);
  const at::Tensor w = weight.detach().to(at::kDouble);
  WeightQuant out;
  at::Tensor rows;  // the view whose rows get one scale each
  if (settings.granularity == Granularity::Tensor) {
    rows = w.reshape({1, -1});
  } else if (settings.granularity == Granularity::Channel || w.dim() < 2) {
    rows = w.reshape({w.size(0), -1});
    out.axis = 0;
  } else {
    const int64_t inputs = w.numel() / w.size(0);
    if (inputs % settings.group_size != 0)
      throw Error("weight of shape " + c10::str(w.sizes()) + ": " + std::to_string(inputs) +
                  " inputs per output channel are not a multiple of group_size " + std::to_string(settings.group_size));
    rows = w.reshape({-1, settings.group_size});
    out.axis = 0;
    out.view_shape = rows.sizes().vec();
  }
  at::Tensor lo = std::get<0>(rows.min(1)), hi = std::get<0>(rows.max(1));
  if (settings.observer == Observer::Mse) {
    // Per row, the shrink factor that minimizes the squared error of the row itself.
    at::Tensor best_err = at::full(lo.sizes(), std::numeric_limits<double>::infinity(), lo.options());
    at::Tensor best_lo = lo.clone(), best_hi = hi.clone();
    for (int step = 100; step >= 50; step -= 2) {
      const double f = step / 100.0;
      const auto q = qparams_from_range(lo * f, hi * f, range, settings.symmetric);
      const at::Tensor fq = fake_quantize(rows.to(at::kFloat), q, range, 0).to(at::kDouble);
      const at::Tensor err = (fq - rows).pow(2).sum(1);
      const at::Tensor better = err < best_err;
      best_err = at::where(better, err, best_err);
      best_lo = at::where(better, lo * f, best_lo);
      best_hi = at::where(better, hi * f, best_hi);
    }
    lo = best_lo;
    hi = best_hi;
  } else if (settings.observer != Observer::MinMax) {
    throw Error(std::string("weights take the minmax or mse observer, not ") + to_string(settings.observer));
  }
  out.qparams = qparams_from_range(lo, hi, range, settings.symmetric);
  if (settings.granularity == Granularity::Tensor) {
    out.qparams.scale = out.qparams.scale.reshape({1});
    out.qparams.zero_point = out.qparams.zero_point.reshape({1});
  }
  return out;
}

at::Tensor fake_quantize_weight(const at::Tensor& weight, const WeightQuant& q, const TensorQuantSettings& settings) {
  const QuantRange range = quant_range(settings.bits, settings.is_signed);
  if (q.axis < 0) return fake_quantize(weight, q.qparams, range, -1);
  const at::Tensor rows = q.view_shape.empty() ? weight.reshape({weight.size(0), -1}) : weight.reshape(q.view_shape);
  return fake_quantize(rows, q.qparams, range, 0).reshape(weight.sizes());
}

}  // namespace qforge
