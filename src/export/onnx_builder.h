// An ONNX graph under construction: unique value names, nodes with their
// attributes, initializers, graph inputs and outputs, and the serialized model
// (ONNX's messages in Protocol Buffers' wire format, written by the builder
// itself: onnx_builder.cpp says why). Knows nothing of LibTorch: tensors reach
// it as raw bytes (onnx_tensors.h makes them from LibTorch tensors).
#pragma once
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

namespace qforge::onnx_export {

// ONNX's TensorProto.DataType values qforge writes.
enum class ElementType : int32_t {
  Float = 1,
  UInt8 = 2,
  Int8 = 3,
  Int16 = 5,
  Int32 = 6,
  Int64 = 7,
  Bool = 9,
  Float16 = 10,
  Double = 11,
  BFloat16 = 16,
  UInt4 = 21,
  Int4 = 22,
};

// A tensor as ONNX stores it: element type, dims, little-endian bytes (4-bit types packed).
struct RawTensor {
  ElementType type = ElementType::Float;
  std::vector<int64_t> dims;
  std::string bytes;
};

using AttributeValue = std::variant<int64_t, double, std::string, std::vector<int64_t>, std::vector<double>, RawTensor>;
using Attributes = std::vector<std::pair<std::string, AttributeValue>>;

// Every node, initializer and graph input or output the graph holds (for checks).
struct NodeView {
  std::string op;
  std::vector<std::string> inputs, outputs;
};

class OnnxBuilder {
 public:
  explicit OnnxBuilder(std::string graph_name);
  ~OnnxBuilder();
  OnnxBuilder(const OnnxBuilder&) = delete;
  OnnxBuilder& operator=(const OnnxBuilder&) = delete;

  // A name not used before, from a readable stem ("layer1.0.conv1.weight").
  std::string fresh(const std::string& stem);

  // Appends a node; returns its output names (fresh names from `stem`).
  std::vector<std::string> node(const std::string& op, const std::vector<std::string>& inputs, size_t outputs = 1,
                                const Attributes& attributes = {}, const std::string& stem = "");
  std::string node1(const std::string& op, const std::vector<std::string>& inputs, const Attributes& attributes = {},
                    const std::string& stem = "") {
    return node(op, inputs, 1, attributes, stem).front();
  }
  // A node whose one output has exactly the name given (graph outputs).
  void named_node(const std::string& op, const std::vector<std::string>& inputs, const std::string& output);

  std::string initializer(const RawTensor& value, const std::string& stem);
  std::string int64s(const std::vector<int64_t>& values, const std::string& stem = "const");  // 1-D int64
  std::string scalar_int64(int64_t value);                                                    // 0-D int64

  // dims: a size, or -1 for a symbolic dimension named by `dim_names` at the same index.
  void input(const std::string& name, ElementType type, const std::vector<int64_t>& dims,
             const std::vector<std::string>& dim_names);
  // An output of known rank and element type; its sizes are left unknown.
  void output(const std::string& name, ElementType type, int64_t rank);

  // Drops the initializers no node reads.
  void prune_initializers();

  // The model file: IR version for the opset, the default domain, producer, metadata.
  std::string serialize(int64_t opset, const std::map<std::string, std::string>& metadata) const;

 private:
  struct Graph;
  std::unique_ptr<Graph> graph_;
  std::map<std::string, int> used_;
};

}  // namespace qforge::onnx_export
