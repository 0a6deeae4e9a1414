// Shared pieces of the op handlers (onnx_ops_*.cpp): axes, reductions, the
// handler shapes that many ops share.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "export/onnx_converter.h"

namespace qforge::onnx_export {

using torch::jit::Node;
using torch::jit::Value;

inline int64_t normalized_axis(int64_t axis, int64_t rank) { return axis < 0 ? axis + rank : axis; }

// Unsqueeze / Squeeze with their axes as an input (opset 13 and later).
std::string unsqueeze(Converter& cx, const std::string& x, const std::vector<int64_t>& axes);
std::string squeeze(Converter& cx, const std::string& x, const std::vector<int64_t>& axes);

// ReduceX over `axes` (all axes when none); axes are an input from opset 18 (ReduceSum: 13).
std::string reduce(Converter& cx, const std::string& op, const std::string& x,
                   const std::optional<std::vector<int64_t>>& axes, bool keepdims);

// Elements [begin, end) of a 1-D tensor (a shape), as a 1-D tensor.
std::string slice1d(Converter& cx, const std::string& x, int64_t begin, int64_t end);

// x with each slice along `axis` repeated `repeats` times in place (torch.repeat_interleave).
std::string repeat_interleave(Converter& cx, const std::string& x, int64_t rank, int64_t axis, int64_t repeats);

// Output 0 computed by `op` over the node's inputs listed, each cast to the result's dtype.
void same_dtype_op(Converter& cx, const Node* n, const std::string& op, const std::vector<size_t>& inputs,
                   const Attributes& attributes = {});

// The output aliases input 0 (no ONNX node): contiguous, dropout in eval, detach.
void pass_through(Converter& cx, const Node* n);

// `a + b` of two lists (scripted code: [q] + k.chunk(2)): one list of both's items.
void concat_lists(Converter& cx, const Node* n);

}  // namespace qforge::onnx_export
