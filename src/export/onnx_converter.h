// TorchScript graph -> ONNX graph. The converter walks the method's inlined
// graph once, evaluating every node on example inputs as it goes, so each
// value's dtype, rank and (when it does not depend on the inputs) its value are
// known. Values that depend on no input are folded here: they reach the ONNX
// graph as initializers, and a weight that a fake-quant op rounds becomes
// integer codes behind a DequantizeLinear. Everything computed from the inputs
// becomes ONNX nodes, one handler per ATen op (onnx_ops_*.cpp).
#pragma once
#include <torch/script.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "export/onnx_builder.h"
#include "export/onnx_tensors.h"

namespace qforge::onnx_export {

// A weight stored as integer codes: what a fake-quant op makes of a constant.
struct QuantizedConstant {
  at::Tensor codes;       // integer values, in the shape the quantizer saw
  at::Tensor scale;       // float32, [] per tensor or [C] along `axis`
  at::Tensor zero_point;  // integer values, same shape as scale
  int64_t axis = -1;
  int64_t qmin = -128, qmax = 127;
  std::vector<int64_t> shape;  // the shape its users see (a reshape after the quantizer), empty: codes' shape
  std::string layer;           // module path of the weight's layer
};

// What one TorchScript value is during the conversion.
struct Val {
  c10::IValue example;                       // its value on the example inputs
  std::string name;                          // ONNX tensor computed at run time (a number: a 0-D tensor)
  std::vector<Val> items;                    // a list or tuple that holds run-time values
  std::map<std::string, Val> fields;         // a dict that holds run-time values
  std::shared_ptr<QuantizedConstant> quant;  // a constant weight rounded by a quantizer
  std::string origin;                        // module path of a constant read from the module
  bool runtime() const;
};

// One quantizer written to the file, for the target's lint.
struct QuantizerRecord {
  std::string layer;  // layer name, or the ONNX tensor it quantizes
  bool weight = false;
  int64_t axis = -1;
  int64_t qmin = -128, qmax = 127;
  int64_t block_size = 0;
  int64_t op_axis_expected = -1;  // the channel axis the consuming op reads (-1: any)
  std::string op;                 // the consuming op ("Conv", "ConvTranspose", "MatMul")
  at::Tensor scale, zero_point;
};

// A tensor the converter computed at run time, kept for finding where a file
// parts from its model: its ONNX name, its value on the example inputs as
// TorchScript computes it, and the node that made it.
struct Probe {
  std::string name;
  at::Tensor expected;
  std::string node;  // "aten::linear (layer 'c', model.py:12)"
};

struct ConvertOptions {
  int64_t opset = 17;
  bool quantized = true;                                  // false: every quantizer left out (the float model)
  bool dynamic = true;                                    // false: sizes are constants of the example inputs
  bool probe = false;                                     // record every floating tensor computed at run time
  std::map<std::string, std::string> layer_of_attribute;  // "_qforge__layer1_0_conv1__input" -> "layer1.0.conv1"
};

// The dtype a value has in the ONNX graph: a tensor's own, int64 for ints,
// float32 for floats, bool for bools.
at::ScalarType number_dtype(const c10::IValue& v);

class Converter;
using OpHandler = std::function<void(Converter&, torch::jit::Node*)>;
// Handlers by op ("aten::conv2d"); each onnx_ops_*.cpp adds its ops.
std::map<std::string, OpHandler>& op_table();
void add_nn_ops(std::map<std::string, OpHandler>& table);
void add_tensor_ops(std::map<std::string, OpHandler>& table);
void add_math_ops(std::map<std::string, OpHandler>& table);
void add_attention_ops(std::map<std::string, OpHandler>& table);
void add_quantization_ops(std::map<std::string, OpHandler>& table);
void add_resize_ops(std::map<std::string, OpHandler>& table);
void add_sequence_ops(std::map<std::string, OpHandler>& table);
void add_norm_ops(std::map<std::string, OpHandler>& table);
void add_recurrent_ops(std::map<std::string, OpHandler>& table);

class Converter {
 public:
  Converter(OnnxBuilder& builder, ConvertOptions options) : b(builder), options(std::move(options)) {}

  // Binds a graph input (self excluded) before run().
  void bind(const torch::jit::Value* input, Val value) { values_[input] = std::move(value); }
  // Converts every node of the block (the method's graph, or a branch taken).
  void run(torch::jit::Block* block);

  // --- for handlers: reading inputs ---
  const Val& val(const torch::jit::Value* v) const;
  const c10::IValue& example(const torch::jit::Value* v) const { return val(v).example; }
  bool is_static(const torch::jit::Value* v) const { return !val(v).runtime(); }
  bool is_none(const torch::jit::Value* v) const { return example(v).isNone(); }
  at::ScalarType dtype(const torch::jit::Value* v) const;  // of a tensor, or the tensor a number becomes
  int64_t rank(const torch::jit::Value* v) const;
  int64_t static_int(const torch::jit::Value* v, const std::string& what) const;
  double static_double(const torch::jit::Value* v, const std::string& what) const;
  std::vector<int64_t> static_ints(const torch::jit::Value* v, const std::string& what) const;
  // ONNX name of a tensor (or number) input, cast to `as` when given.
  std::string tensor(const torch::jit::Value* v, std::optional<at::ScalarType> as = std::nullopt);
  // A constant weight as its consumer reads it, transposed ([in, out]) for MatMul.
  std::string weight(const torch::jit::Value* v, bool transposed, const std::string& op);
  // 1-D int64 tensor of an int list (sizes, shapes), constant or computed.
  std::string int64_list(const torch::jit::Value* v);
  std::string int64_list(const std::vector<Val>& items);  // numbers, each constant or computed
  std::string shape_of(const std::string& tensor_name);   // Shape, once per tensor

  // While it lives, `v` reads as the ONNX tensor `name` (an input inside a fused op).
  class Scope {
   public:
    Scope(Converter& cx, const torch::jit::Value* v, const std::string& name) : cx_(cx), v_(v), saved_(cx.val(v)) {
      Val renamed = saved_;
      renamed.name = name;
      cx_.values_[v_] = renamed;
    }
    ~Scope() { cx_.values_[v_] = saved_; }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Converter& cx_;
    const torch::jit::Value* v_;
    Val saved_;
  };

  // --- for handlers: writing outputs ---
  void set(const torch::jit::Value* v, const std::string& onnx_name);
  void set(const torch::jit::Value* v, Val value);
  void alias(const torch::jit::Value* out, const torch::jit::Value* in) { set(out, val(in)); }
  std::string cast(const std::string& name, at::ScalarType from, at::ScalarType to);
  std::string constant(const at::Tensor& value, const std::string& stem = "const") {
    return b.initializer(raw(value), stem);
  }
  std::string scalar_float(double value, at::ScalarType dtype = at::kFloat);  // a 0-D constant of `dtype`
  std::string stem(const torch::jit::Node* n) const;  // readable prefix for the node's ONNX names
  [[noreturn]] void fail(const torch::jit::Node* n, const std::string& why) const;
  std::string where(const torch::jit::Node* n) const;  // "layer 'blocks.0.attn', model.py:42"

  std::string layer_of(const Val& v) const;  // layer name of a constant or quantization parameter

  // The outputs of the node being converted, evaluated on the example inputs.
  const c10::IValue& result(size_t i = 0) const { return results_.at(i); }
  at::ScalarType result_dtype(size_t i = 0) const { return number_dtype(results_.at(i)); }

  OnnxBuilder& b;
  const ConvertOptions options;
  std::vector<QuantizerRecord> quantizers;
  std::vector<Probe> probes;  // with options.probe, in the order the nodes ran
  std::map<std::string, std::string> activation_qdq;  // "x|scale|zp|range" -> the DQ output, shared by consumers
  std::vector<std::string> notes;

 private:
  void convert(torch::jit::Node* n);
  void plant_fault_for_tests(const torch::jit::Node* n);
  bool draws_random_numbers(const torch::jit::Node* n) const;
  void unroll(torch::jit::Node* loop);
  void evaluate(torch::jit::Node* n, std::vector<c10::IValue>& outputs) const;
  void fold(torch::jit::Node* n, std::vector<c10::IValue>& outputs);
  std::string materialize(const Val& v, const std::string& stem);
  std::string dequantized(const std::shared_ptr<QuantizedConstant>& q, bool transposed, const std::string& op);
  std::string write_dequantized(const QuantizedConstant& q, bool transposed, const std::string& op);
  // The initializer made once per (memory, variant) by `make`. The entry keeps `owner`, what
  // `address` lies in, alive: no later tensor or quantized weight can take that address (an
  // unrolled loop frees each iteration's values; a reused address once gave one layer's weight
  // to another).
  std::string cached(std::shared_ptr<const void> owner, const void* address, const std::string& variant,
                     const std::function<std::string()>& make);

  std::vector<c10::IValue> results_;
  std::map<const torch::jit::Value*, Val> values_;
  std::map<std::string, std::string> shapes_;
  struct CachedConstant {
    std::string name;
    std::shared_ptr<const void> owner;
  };
  std::map<std::pair<const void*, std::string>, CachedConstant> constants_;  // (memory, variant) -> initializer
};

}  // namespace qforge::onnx_export
