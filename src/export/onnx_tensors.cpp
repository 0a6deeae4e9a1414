#include "export/onnx_tensors.h"

#include <ATen/ATen.h>

#include "qforge/errors.h"

namespace qforge::onnx_export {

ElementType element_type(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return ElementType::Float;
    case at::kDouble: return ElementType::Double;
    case at::kHalf: return ElementType::Float16;
    case at::kBFloat16: return ElementType::BFloat16;
    case at::kLong: return ElementType::Int64;
    case at::kInt: return ElementType::Int32;
    case at::kShort: return ElementType::Int16;
    case at::kChar: return ElementType::Int8;
    case at::kByte: return ElementType::UInt8;
    case at::kBool: return ElementType::Bool;
    default: throw ExportError(std::string("ONNX has no element type for ") + c10::toString(dtype));
  }
}

RawTensor raw(const at::Tensor& t) {
  const at::Tensor c = t.detach().cpu().contiguous();
  return {element_type(c.scalar_type()), c.sizes().vec(),
          std::string(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size())};
}

RawTensor raw_codes(const at::Tensor& codes, ElementType type) {
  if (type == ElementType::Int8) return raw(codes.to(at::kChar));
  if (type == ElementType::UInt8) return raw(codes.to(at::kByte));
  // Two 4-bit codes a byte, the first element in the low nibble (ONNX's INT4/UINT4 packing).
  const at::Tensor c = codes.to(at::kInt).contiguous().reshape({-1});
  const int32_t* v = c.data_ptr<int32_t>();
  std::string bytes((c.numel() + 1) / 2, '\0');
  for (int64_t i = 0; i < c.numel(); ++i) {
    const auto nibble = static_cast<uint8_t>(v[i] & 0x0F);
    bytes[i / 2] = static_cast<char>(static_cast<uint8_t>(bytes[i / 2]) | (i % 2 ? nibble << 4 : nibble));
  }
  return {type, codes.sizes().vec(), bytes};
}

}  // namespace qforge::onnx_export
