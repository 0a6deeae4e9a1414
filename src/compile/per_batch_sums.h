// Float64 sums kept per batch and reduced with exact_sum (runtime/exact_sum.h):
// every rank, on any rank count, gets the same totals bit for bit. One vector
// holds every item's values (a slice each), so one exact_sum reduces them all.
#pragma once
#include <ATen/ATen.h>

#include <vector>

#include "runtime/exact_sum.h"

namespace qforge {

class PerBatchSums {
 public:
  explicit PerBatchSums(const std::vector<int64_t>& widths) : offset_{0} {
    for (int64_t w : widths) offset_.push_back(offset_.back() + w);
    current_ = at::zeros({offset_.back()}, at::kDouble);
  }
  int64_t size() const { return offset_.back(); }
  // Item i's slice of a vector laid out like these sums.
  at::Tensor slice(const at::Tensor& all, size_t i) const { return all.slice(0, offset_[i], offset_[i + 1]); }
  void add(size_t i, const at::Tensor& values) { slice(current_, i).add_(values.to(at::kCPU, at::kDouble)); }
  void end_batch() {
    batches_.push_back(current_);
    current_ = at::zeros({size()}, at::kDouble);
  }
  // Collective: every item's sums over all batches of all ranks.
  std::vector<at::Tensor> reduce(Communicator& comm) const {
    const at::Tensor sums = exact_sum(batches_, {size()}, comm);
    std::vector<at::Tensor> out;
    for (size_t i = 0; i + 1 < offset_.size(); ++i) out.push_back(slice(sums, i).clone());
    return out;
  }

 private:
  std::vector<int64_t> offset_;
  at::Tensor current_;
  std::vector<at::Tensor> batches_;
};

}  // namespace qforge
