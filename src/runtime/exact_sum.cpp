#include "runtime/exact_sum.h"

#include <ATen/ATen.h>

#include <cmath>

namespace qforge {

int fixed_point_exponent(double bound, int64_t count) {
  int bound_exponent = 0;  // bound < 2^bound_exponent
  if (bound > 0) std::frexp(bound, &bound_exponent);
  const int count_bits = static_cast<int>(std::ceil(std::log2(static_cast<double>(std::max<int64_t>(count, 1)))));
  return 61 - count_bits - bound_exponent;
}

at::Tensor exact_sum(const std::vector<at::Tensor>& items, at::IntArrayRef shape, Communicator& comm) {
  // Two exact reductions fix the grid: the largest |item| (MAX) and the item count (integer SUM).
  at::Tensor bound = at::zeros({1}, at::kDouble);
  for (const auto& item : items) bound = at::maximum(bound, item.detach().abs().max().to(at::kCPU, at::kDouble));
  at::Tensor count = at::tensor({static_cast<int64_t>(items.size())}, at::kLong);
  comm.all_reduce(bound, {ReduceOp::Max});
  comm.all_reduce(count);
  const int exponent = fixed_point_exponent(bound.item<double>(), count.item<int64_t>());
  at::Tensor sums = at::zeros(shape, at::kLong);
  for (const auto& item : items)
    sums += at::round(item.detach().to(at::kCPU, at::kDouble) * std::ldexp(1.0, exponent)).to(at::kLong);
  comm.all_reduce(sums);
  return sums.to(at::kDouble) * std::ldexp(1.0, -exponent);
}

}  // namespace qforge
