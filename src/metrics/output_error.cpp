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

c10::IValue map_tensors(const c10::IValue& value, const std::function<at::Tensor(const at::Tensor&)>& f) {
  if (value.isTensor()) return f(value.toTensor());
  if (value.isTuple()) {
    std::vector<c10::IValue> elements;
    for (const auto& e : value.toTupleRef().elements()) elements.push_back(map_tensors(e, f));
    return c10::ivalue::Tuple::create(std::move(elements));
  }
  if (value.isList()) {
    const auto list = value.toList();
    c10::impl::GenericList out(list.elementType());
    for (size_t i = 0; i < list.size(); ++i) out.push_back(map_tensors(list.get(i), f));
    return out;
  }
  if (value.isGenericDict()) {
    const auto dict = value.toGenericDict();
    c10::impl::GenericDict out(dict.keyType(), dict.valueType());
    for (const auto& entry : dict) out.insert(entry.key(), map_tensors(entry.value(), f));
    return out;
  }
  return value;  // numbers, strings, None: immutable
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
