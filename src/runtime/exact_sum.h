// Sums that come out the same on any rank count. Floating-point addition
// depends on its order, and an all-reduce adds in an order that depends on how
// many ranks there are. Each item (one batch's sum, computed identically
// wherever the batch runs) is rounded onto a fixed-point int64 grid instead;
// int64 addition is exact, so the total is independent of order and ranks.
#pragma once
#include <ATen/Tensor.h>

#include <cstdint>
#include <vector>

#include "runtime/communicator.h"

namespace qforge {

// The grid 2^-exponent for summing `count` items, none larger than `bound` in
// magnitude: as fine as it can be while the total stays below 2^61.
int fixed_point_exponent(double bound, int64_t count);

// Collective: the sum over every rank's `items` (float64 tensors of one shape,
// any device, possibly none on a rank), identical on every rank and rank count.
// `shape`: the items' shape, for ranks that hold none.
at::Tensor exact_sum(const std::vector<at::Tensor>& items, at::IntArrayRef shape, Communicator& comm);

}  // namespace qforge
