// An ONNX graph under construction: unique value names, nodes with their
// attributes, initializers made from LibTorch tensors (int4 packed two to a
// byte), graph inputs and outputs. Knows ONNX's encoding, nothing of TorchScript.
#pragma once
#include <ATen/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "export/onnx.pb.h"

namespace qforge::onnx_export {

using AttributeValue = std::variant<int64_t, double, std::string, std::vector<int64_t>, std::vector<double>, at::Tensor>;
using Attributes = std::vector<std::pair<std::string, AttributeValue>>;

// ONNX element type of a LibTorch dtype; ExportError for dtypes ONNX has no type for.
int32_t onnx_type(at::ScalarType dtype);

class OnnxBuilder {
 public:
  explicit OnnxBuilder(std::string graph_name);

  // A name not used before, from a readable stem ("layer1.0.conv1.weight").
  std::string fresh(const std::string& stem);

  // Appends a node; returns its output names (fresh names from `stem`).
  std::vector<std::string> node(const std::string& op, const std::vector<std::string>& inputs, size_t outputs = 1,
                                const Attributes& attributes = {}, const std::string& stem = "");
  std::string node1(const std::string& op, const std::vector<std::string>& inputs, const Attributes& attributes = {},
                    const std::string& stem = "") {
    return node(op, inputs, 1, attributes, stem).front();
  }

  // An initializer holding `value` (contiguous copy, CPU). `onnx_dtype` overrides
  // the element type for integer codes stored narrower (INT4/UINT4: packed).
  std::string initializer(const at::Tensor& value, const std::string& stem, int32_t onnx_dtype = 0);
  std::string int64s(const std::vector<int64_t>& values, const std::string& stem = "const");  // 1-D int64
  std::string scalar_int64(int64_t value);   // 0-D int64
  std::string scalar_float(double value, at::ScalarType dtype = at::kFloat);  // 0-D

  // dims: a size, or -1 for a symbolic dimension named by `dim_names` at the same index.
  void input(const std::string& name, at::ScalarType dtype, const std::vector<int64_t>& dims,
             const std::vector<std::string>& dim_names);
  void output(const std::string& name, at::ScalarType dtype, int64_t rank);

  qforge::onnx::GraphProto& graph() { return graph_; }
  const qforge::onnx::GraphProto& graph() const { return graph_; }

 private:
  qforge::onnx::GraphProto graph_;
  std::map<std::string, int> used_;
};

// The model file: IR version for the opset, the default domain, producer, metadata.
std::string serialize_model(const qforge::onnx::GraphProto& graph, int64_t opset,
                            const std::map<std::string, std::string>& metadata);

}  // namespace qforge::onnx_export
