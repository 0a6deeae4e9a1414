// Fake quantization of activations: QuantizeLinear + DequantizeLinear. (A
// fake-quant op on a constant weight never reaches a handler: the converter
// folds it into integer codes, onnx_converter.cpp.)
#include <ATen/ATen.h>

#include "export/onnx_ops.h"

namespace qforge::onnx_export {
namespace {

ElementType activation_type(int64_t qmin, int64_t qmax, int64_t opset) {
  if (qmin == -128 && qmax == 127) return ElementType::Int8;
  if (qmin == 0 && qmax == 255) return ElementType::UInt8;
  if (opset >= 21 && qmin == -8 && qmax == 7) return ElementType::Int4;
  if (opset >= 21 && qmin == 0 && qmax == 15) return ElementType::UInt4;
  return qmin < 0 ? ElementType::Int8 : ElementType::UInt8;  // narrower ranges: clipped after (below)
}

at::Tensor tensor_of(const c10::IValue& v, at::ScalarType dt) {
  return (v.isTensor() ? v.toTensor() : at::scalar_tensor(v.toScalar(), at::kDouble)).to(dt).reshape({-1});
}

// fake_quantize_per_tensor_affine(x, scale, zero_point, qmin, qmax),
// fake_quantize_per_channel_affine(x, scale, zero_point, axis, qmin, qmax) and
// their _learnable_ forms (one more argument, the gradient factor).
void fake_quantize(Converter& cx, const Node* n, bool per_channel) {
  if (!cx.options.quantized) return pass_through(cx, n);
  const at::ScalarType dt = cx.result_dtype();
  const at::Tensor scale = tensor_of(cx.example(n->input(1)), at::kFloat);
  const at::Tensor zero = tensor_of(cx.example(n->input(2)), at::kFloat).round().to(at::kLong);
  const int64_t axis = per_channel ? normalized_axis(cx.static_int(n->input(3), "axis"), cx.rank(n->input(0))) : -1;
  const int64_t qmin = cx.static_int(n->input(per_channel ? 4 : 3), "quant_min");
  const int64_t qmax = cx.static_int(n->input(per_channel ? 5 : 4), "quant_max");
  if (!cx.is_static(n->input(1)) || !cx.is_static(n->input(2))) cx.fail(n, "quantization parameters must be constant");

  const std::string x = cx.tensor(n->input(0), at::kFloat);
  const std::string key = x + "|" + c10::str(scale) + "|" + c10::str(zero) + "|" + std::to_string(axis) + "|" +
                          std::to_string(qmin) + "|" + std::to_string(qmax);
  auto shared = cx.activation_qdq.find(key);
  if (shared != cx.activation_qdq.end()) return cx.set(n->output(0), cx.cast(shared->second, at::kFloat, dt));

  const ElementType type = activation_type(qmin, qmax, cx.options.opset);
  const Val& scale_value = cx.val(n->input(1));
  const std::string layer = cx.layer_of(scale_value);
  const std::string stem = layer.empty() ? "activation" : layer + ".input";
  const std::string s = cx.constant(axis < 0 ? scale.reshape({}) : scale, stem + "_scale");
  const std::string z = cx.b.initializer(raw_codes(axis < 0 ? zero.reshape({}) : zero, type), stem + "_zero_point");
  Attributes attributes;
  if (axis >= 0) attributes.push_back({"axis", axis});
  const std::string q = cx.b.node1("QuantizeLinear", {x, s, z}, attributes, stem);
  std::string y = cx.b.node1("DequantizeLinear", {q, s, z}, attributes, stem);
  // A range narrower than the stored type (say 6-bit codes in int8): the same
  // values as the fake-quant op, since clamping the codes and clipping their
  // dequantized values agree (the dequantization is increasing).
  const bool narrower = !(qmin == -128 && qmax == 127) && !(qmin == 0 && qmax == 255) && type != ElementType::Int4 &&
                        type != ElementType::UInt4;
  if (narrower) {
    if (axis >= 0) cx.fail(n, "per-channel activation quantization narrower than 8 bits has no ONNX form");
    const double s0 = scale.item<double>(), z0 = static_cast<double>(zero.item<int64_t>());
    const float lo = static_cast<float>(qmin - z0) * static_cast<float>(s0);
    const float hi = static_cast<float>(qmax - z0) * static_cast<float>(s0);
    y = cx.b.node1("Clip", {y, cx.scalar_float(lo), cx.scalar_float(hi)});
  }
  QuantizerRecord record;
  record.layer = layer.empty() ? x : layer;
  record.axis = axis;
  record.qmin = qmin;
  record.qmax = qmax;
  record.scale = scale;
  record.zero_point = zero;
  cx.quantizers.push_back(record);
  cx.activation_qdq[key] = y;
  cx.set(n->output(0), cx.cast(y, at::kFloat, dt));
}

}  // namespace

void add_quantization_ops(std::map<std::string, OpHandler>& t) {
  t["aten::fake_quantize_per_tensor_affine"] = [](Converter& cx, Node* n) { fake_quantize(cx, n, false); };
  t["aten::fake_quantize_per_channel_affine"] = [](Converter& cx, Node* n) { fake_quantize(cx, n, true); };
  t["aten::_fake_quantize_learnable_per_tensor_affine"] = t["aten::fake_quantize_per_tensor_affine"];
  t["aten::_fake_quantize_learnable_per_channel_affine"] = t["aten::fake_quantize_per_channel_affine"];
}

}  // namespace qforge::onnx_export
