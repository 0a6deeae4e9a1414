#include "metrics/output_error.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "qforge/errors.h"

namespace qforge {
namespace {

void collect(const c10::IValue& v, std::vector<at::Tensor>& out) {
  if (v.isTensor()) {
    if (v.toTensor().is_floating_point()) out.push_back(v.toTensor());
  } else if (v.isTuple()) {
    for (const auto& e : v.toTupleRef().elements()) collect(e, out);
  } else if (v.isList()) {
    for (const auto& e : v.toListRef()) collect(e, out);
  } else if (v.isGenericDict()) {
    std::vector<std::pair<std::string, c10::IValue>> entries;
    for (const auto& e : v.toGenericDict()) entries.emplace_back(c10::str(e.key()), e.value());
    std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& e : entries) collect(e.second, out);
  }
}

}  // namespace

std::vector<at::Tensor> output_tensors(const c10::IValue& output) {
  std::vector<at::Tensor> out;
  collect(output, out);
  return out;
}

void OutputError::add(const c10::IValue& reference, const c10::IValue& approximation) {
  const auto ref = output_tensors(reference);
  const auto approx = output_tensors(approximation);
  if (ref.size() != approx.size()) throw Error("outputs differ in structure between the float and compiled models");
  for (size_t i = 0; i < ref.size(); ++i) {
    const auto r = ref[i].detach().to(at::kDouble);
    const auto a = approx[i].detach().to(at::kDouble);
    error_squares += (r - a).pow(2).sum().item<double>();
    reference_squares += r.pow(2).sum().item<double>();
  }
}

double OutputError::relative() const {
  if (error_squares == 0) return 0;
  return reference_squares > 0 ? std::sqrt(error_squares / reference_squares) : std::numeric_limits<double>::infinity();
}

double OutputError::sqnr_db() const {
  if (error_squares == 0) return std::numeric_limits<double>::infinity();
  return 10 * std::log10(reference_squares / error_squares);
}

}  // namespace qforge
