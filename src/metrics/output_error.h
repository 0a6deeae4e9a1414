// Comparing a model's outputs with reference outputs: the tensors of an
// output (tensor, tuple, list or dict of them) and the error summed over batches.
#pragma once
#include <ATen/core/ivalue.h>

#include <functional>
#include <vector>

namespace qforge {

// The floating-point tensors of an output, in a fixed order (dict values by key order).
std::vector<at::Tensor> output_tensors(const c10::IValue& output);

// `value` with every tensor in it replaced by f(tensor); containers are new,
// so a caller that appends to a list it received leaves the original alone.
c10::IValue map_tensors(const c10::IValue& value, const std::function<at::Tensor(const at::Tensor&)>& f);

// Sum of squared errors and of squared reference values over many batches.
struct OutputError {
  double error_squares = 0;
  double reference_squares = 0;
  void add(const c10::IValue& reference, const c10::IValue& approximation);
  double relative() const;  // sqrt(error / reference); 0 when both are 0
  double sqnr_db() const;   // 10 log10(reference / error); +inf when exact
};

}  // namespace qforge
