// LibTorch tensors and dtypes as the ONNX builder takes them.
#pragma once
#include <ATen/Tensor.h>

#include "export/onnx_builder.h"

namespace qforge::onnx_export {

// ONNX element type of a LibTorch dtype; ExportError for dtypes ONNX has no type for.
ElementType element_type(at::ScalarType dtype);
// The tensor's elements, contiguous, in its own dtype.
RawTensor raw(const at::Tensor& t);
// Integer codes stored as `type` (INT8, UINT8, or INT4/UINT4 packed two to a byte).
RawTensor raw_codes(const at::Tensor& codes, ElementType type);

}  // namespace qforge::onnx_export
