#include "export/onnx_builder.h"

#include <cstring>
#include <set>

namespace qforge::onnx_export {

// The graph as plain values; serialize() writes them in Protocol Buffers' wire
// format with ONNX's field numbers (onnx.proto). Written by hand, not through a
// protobuf library: PyTorch's wheels carry a protobuf of their own, older than
// the system's, whose exported symbols the dynamic linker can bind in place of
// the system library's (a crash in generated code, seen on the GPU machines).
struct ValueInfo {
  std::string name;
  ElementType type;
  std::vector<int64_t> dims;           // -1: symbolic (dim_names) or unknown
  std::vector<std::string> dim_names;  // "" : unknown
};

struct NodeRecord {
  std::string op, name;
  std::vector<std::string> inputs, outputs;
  Attributes attributes;
};

struct OnnxBuilder::Graph {
  std::string name;
  std::vector<NodeRecord> nodes;
  std::vector<std::pair<std::string, RawTensor>> initializers;
  std::vector<ValueInfo> inputs, outputs;
};

namespace {

// --- Protocol Buffers wire format: varints, length-delimited fields, fixed32 ---
enum WireType { kVarint = 0, kLengthDelimited = 2, kFixed32 = 5 };

void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void key(std::string& out, int field, WireType type) { varint(out, (static_cast<uint64_t>(field) << 3) | type); }

// int64 fields take negative values as their 64-bit two's complement (ten bytes).
void int_field(std::string& out, int field, int64_t v) {
  key(out, field, kVarint);
  varint(out, static_cast<uint64_t>(v));
}

void bytes_field(std::string& out, int field, const std::string& bytes) {
  key(out, field, kLengthDelimited);
  varint(out, bytes.size());
  out += bytes;
}

void float_field(std::string& out, int field, float f) {
  key(out, field, kFixed32);
  char b[4];
  std::memcpy(b, &f, 4);  // little-endian hosts (x86-64, aarch64)
  out.append(b, 4);
}

// --- ONNX messages (field numbers of onnx.proto) ---
std::string tensor_proto(const RawTensor& t, const std::string& name) {
  std::string m;
  for (int64_t d : t.dims) int_field(m, 1, d);    // dims
  int_field(m, 2, static_cast<int64_t>(t.type));  // data_type
  if (!name.empty()) bytes_field(m, 8, name);     // name
  bytes_field(m, 9, t.bytes);                     // raw_data
  return m;
}

// AttributeProto.AttributeType values.
enum AttributeType { kFloat = 1, kInt = 2, kString = 3, kTensor = 4, kFloats = 6, kInts = 7 };

std::string attribute_proto(const std::string& name, const AttributeValue& value) {
  std::string m;
  bytes_field(m, 1, name);  // name
  if (auto* i = std::get_if<int64_t>(&value)) {
    int_field(m, 3, *i);  // i
    int_field(m, 20, kInt);
  } else if (auto* f = std::get_if<double>(&value)) {
    float_field(m, 2, static_cast<float>(*f));  // f
    int_field(m, 20, kFloat);
  } else if (auto* s = std::get_if<std::string>(&value)) {
    bytes_field(m, 4, *s);  // s
    int_field(m, 20, kString);
  } else if (auto* is = std::get_if<std::vector<int64_t>>(&value)) {
    for (int64_t v : *is) int_field(m, 8, v);  // ints
    int_field(m, 20, kInts);
  } else if (auto* fs = std::get_if<std::vector<double>>(&value)) {
    for (double v : *fs) float_field(m, 7, static_cast<float>(v));  // floats
    int_field(m, 20, kFloats);
  } else {
    bytes_field(m, 5, tensor_proto(std::get<RawTensor>(value), ""));  // t
    int_field(m, 20, kTensor);
  }
  return m;
}

std::string node_proto(const NodeRecord& n) {
  std::string m;
  for (const auto& i : n.inputs) bytes_field(m, 1, i);
  for (const auto& o : n.outputs) bytes_field(m, 2, o);
  bytes_field(m, 3, n.name);
  bytes_field(m, 4, n.op);
  for (const auto& [name, value] : n.attributes) bytes_field(m, 5, attribute_proto(name, value));
  return m;
}

std::string value_info_proto(const ValueInfo& v) {
  std::string shape;  // TensorShapeProto
  for (size_t d = 0; d < v.dims.size(); ++d) {
    std::string dim;  // Dimension: dim_value = 1, dim_param = 2, neither: unknown
    if (v.dims[d] >= 0)
      int_field(dim, 1, v.dims[d]);
    else if (!v.dim_names[d].empty())
      bytes_field(dim, 2, v.dim_names[d]);
    bytes_field(shape, 1, dim);
  }
  std::string tensor;  // TypeProto.Tensor
  int_field(tensor, 1, static_cast<int64_t>(v.type));
  bytes_field(tensor, 2, shape);
  std::string type;  // TypeProto
  bytes_field(type, 1, tensor);
  std::string m;
  bytes_field(m, 1, v.name);
  bytes_field(m, 2, type);
  return m;
}

}  // namespace

OnnxBuilder::OnnxBuilder(std::string graph_name) : graph_(std::make_unique<Graph>()) {
  graph_->name = std::move(graph_name);
}

OnnxBuilder::~OnnxBuilder() = default;

std::string OnnxBuilder::fresh(const std::string& stem) {
  const std::string base = stem.empty() ? "v" : stem;
  const int n = used_[base]++;
  return n == 0 ? base : base + "_" + std::to_string(n);
}

std::vector<std::string> OnnxBuilder::node(const std::string& op, const std::vector<std::string>& inputs,
                                           size_t outputs, const Attributes& attributes, const std::string& stem) {
  NodeRecord n{op, fresh(stem.empty() ? op : stem + "/" + op), inputs, {}, attributes};
  for (size_t k = 0; k < outputs; ++k) n.outputs.push_back(fresh(stem.empty() ? op : stem));
  graph_->nodes.push_back(n);
  return n.outputs;
}

void OnnxBuilder::named_node(const std::string& op, const std::vector<std::string>& inputs, const std::string& output) {
  graph_->nodes.push_back({op, output + "/" + op, inputs, {output}, {}});
}

std::string OnnxBuilder::initializer(const RawTensor& value, const std::string& stem) {
  const std::string name = fresh(stem);
  graph_->initializers.emplace_back(name, value);
  return name;
}

std::string OnnxBuilder::int64s(const std::vector<int64_t>& values, const std::string& stem) {
  RawTensor t{ElementType::Int64,
              {static_cast<int64_t>(values.size())},
              std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(int64_t))};
  return initializer(t, stem);
}

std::string OnnxBuilder::scalar_int64(int64_t value) {
  return initializer({ElementType::Int64, {}, std::string(reinterpret_cast<const char*>(&value), sizeof value)},
                     "const");
}

void OnnxBuilder::input(const std::string& name, ElementType type, const std::vector<int64_t>& dims,
                        const std::vector<std::string>& dim_names) {
  graph_->inputs.push_back({name, type, dims, dim_names});
}

void OnnxBuilder::output(const std::string& name, ElementType type, int64_t rank) {
  graph_->outputs.push_back({name, type, std::vector<int64_t>(rank, -1), std::vector<std::string>(rank)});
}

void OnnxBuilder::prune_initializers() {
  std::set<std::string> read;
  for (const auto& n : graph_->nodes)
    for (const auto& i : n.inputs) read.insert(i);
  for (const auto& o : graph_->outputs) read.insert(o.name);
  auto& list = graph_->initializers;
  list.erase(std::remove_if(list.begin(), list.end(), [&](const auto& t) { return !read.count(t.first); }), list.end());
}

std::string OnnxBuilder::serialize(int64_t opset, const std::map<std::string, std::string>& metadata) const {
  std::string graph;  // GraphProto
  for (const auto& n : graph_->nodes) bytes_field(graph, 1, node_proto(n));
  bytes_field(graph, 2, graph_->name);
  for (const auto& [name, t] : graph_->initializers) bytes_field(graph, 5, tensor_proto(t, name));
  for (const auto& v : graph_->inputs) bytes_field(graph, 11, value_info_proto(v));
  for (const auto& v : graph_->outputs) bytes_field(graph, 12, value_info_proto(v));

  std::string model;  // ModelProto
  // The lowest IR version that carries the opset (ONNX's versioning table):
  // older readers (TensorRT 8.x, onnx 1.12's checker) accept the file then.
  int_field(model, 1, opset >= 21 ? 10 : opset >= 19 ? 9 : 8);  // ir_version
  bytes_field(model, 2, "qforge");                              // producer_name
  bytes_field(model, 7, graph);                                 // graph
  std::string domain;                                           // OperatorSetIdProto: the default domain
  bytes_field(domain, 1, "");
  int_field(domain, 2, opset);
  bytes_field(model, 8, domain);  // opset_import
  for (const auto& [k, v] : metadata) {
    std::string entry;  // StringStringEntryProto
    bytes_field(entry, 1, k);
    bytes_field(entry, 2, v);
    bytes_field(model, 14, entry);  // metadata_props
  }
  return model;
}

}  // namespace qforge::onnx_export
