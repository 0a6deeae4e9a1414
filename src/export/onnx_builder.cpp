#include "export/onnx_builder.h"

#include <set>
#include <stdexcept>

#include "export/onnx.pb.h"

namespace qforge::onnx_export {

namespace pb = qforge::onnx;

struct OnnxBuilder::Graph {
  pb::GraphProto proto;
};

OnnxBuilder::OnnxBuilder(std::string graph_name) : graph_(std::make_unique<Graph>()) {
  graph_->proto.set_name(std::move(graph_name));
}

OnnxBuilder::~OnnxBuilder() = default;

std::string OnnxBuilder::fresh(const std::string& stem) {
  const std::string base = stem.empty() ? "v" : stem;
  const int n = used_[base]++;
  return n == 0 ? base : base + "_" + std::to_string(n);
}

namespace {

void set_tensor(pb::TensorProto& proto, const RawTensor& t) {
  for (int64_t d : t.dims) proto.add_dims(d);
  proto.set_data_type(static_cast<int32_t>(t.type));
  proto.set_raw_data(t.bytes);
}

void set_attribute(pb::AttributeProto& a, const AttributeValue& value) {
  if (auto* i = std::get_if<int64_t>(&value)) {
    a.set_type(pb::AttributeProto::INT);
    a.set_i(*i);
  } else if (auto* f = std::get_if<double>(&value)) {
    a.set_type(pb::AttributeProto::FLOAT);
    a.set_f(static_cast<float>(*f));
  } else if (auto* s = std::get_if<std::string>(&value)) {
    a.set_type(pb::AttributeProto::STRING);
    a.set_s(*s);
  } else if (auto* is = std::get_if<std::vector<int64_t>>(&value)) {
    a.set_type(pb::AttributeProto::INTS);
    for (int64_t v : *is) a.add_ints(v);
  } else if (auto* fs = std::get_if<std::vector<double>>(&value)) {
    a.set_type(pb::AttributeProto::FLOATS);
    for (double v : *fs) a.add_floats(static_cast<float>(v));
  } else {
    a.set_type(pb::AttributeProto::TENSOR);
    set_tensor(*a.mutable_t(), std::get<RawTensor>(value));
  }
}

void set_type(pb::ValueInfoProto* info, ElementType type) {
  info->mutable_type()->mutable_tensor_type()->set_elem_type(static_cast<int32_t>(type));
}

}  // namespace

std::vector<std::string> OnnxBuilder::node(const std::string& op, const std::vector<std::string>& inputs, size_t outputs,
                                           const Attributes& attributes, const std::string& stem) {
  pb::NodeProto* n = graph_->proto.add_node();
  n->set_op_type(op);
  n->set_name(fresh(stem.empty() ? op : stem + "/" + op));
  for (const auto& i : inputs) n->add_input(i);
  std::vector<std::string> names;
  for (size_t k = 0; k < outputs; ++k) {
    names.push_back(fresh(stem.empty() ? op : stem));
    n->add_output(names.back());
  }
  for (const auto& [name, value] : attributes) {
    pb::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    set_attribute(*a, value);
  }
  return names;
}

void OnnxBuilder::named_node(const std::string& op, const std::vector<std::string>& inputs, const std::string& output) {
  pb::NodeProto* n = graph_->proto.add_node();
  n->set_op_type(op);
  n->set_name(output + "/" + op);
  for (const auto& i : inputs) n->add_input(i);
  n->add_output(output);
}

std::string OnnxBuilder::initializer(const RawTensor& value, const std::string& stem) {
  pb::TensorProto* proto = graph_->proto.add_initializer();
  const std::string name = fresh(stem);
  proto->set_name(name);
  set_tensor(*proto, value);
  return name;
}

std::string OnnxBuilder::int64s(const std::vector<int64_t>& values, const std::string& stem) {
  RawTensor t{ElementType::Int64, {static_cast<int64_t>(values.size())},
              std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(int64_t))};
  return initializer(t, stem);
}

std::string OnnxBuilder::scalar_int64(int64_t value) {
  return initializer({ElementType::Int64, {}, std::string(reinterpret_cast<const char*>(&value), sizeof value)}, "const");
}

void OnnxBuilder::input(const std::string& name, ElementType type, const std::vector<int64_t>& dims,
                        const std::vector<std::string>& dim_names) {
  pb::ValueInfoProto* info = graph_->proto.add_input();
  info->set_name(name);
  set_type(info, type);
  auto* shape = info->mutable_type()->mutable_tensor_type()->mutable_shape();
  for (size_t d = 0; d < dims.size(); ++d) {
    auto* dim = shape->add_dim();
    if (dims[d] < 0)
      dim->set_dim_param(dim_names.at(d));
    else
      dim->set_dim_value(dims[d]);
  }
}

void OnnxBuilder::output(const std::string& name, ElementType type, int64_t rank) {
  pb::ValueInfoProto* info = graph_->proto.add_output();
  info->set_name(name);
  set_type(info, type);
  auto* shape = info->mutable_type()->mutable_tensor_type()->mutable_shape();
  for (int64_t d = 0; d < rank; ++d) shape->add_dim();
}

void OnnxBuilder::prune_initializers() {
  std::set<std::string> read;
  for (const auto& n : graph_->proto.node())
    for (const auto& i : n.input()) read.insert(i);
  for (const auto& o : graph_->proto.output()) read.insert(o.name());
  google::protobuf::RepeatedPtrField<pb::TensorProto> kept;
  for (auto& t : *graph_->proto.mutable_initializer())
    if (read.count(t.name())) *kept.Add() = std::move(t);
  graph_->proto.mutable_initializer()->Swap(&kept);
}

std::string OnnxBuilder::serialize(int64_t opset, const std::map<std::string, std::string>& metadata) const {
  pb::ModelProto model;
  // The lowest IR version that carries the opset (ONNX's versioning table):
  // older readers (TensorRT 8.x, onnx 1.12's checker) accept the file then.
  model.set_ir_version(opset >= 21 ? 10 : opset >= 19 ? 9 : 8);
  auto* domain = model.add_opset_import();
  domain->set_domain("");
  domain->set_version(opset);
  model.set_producer_name("qforge");
  for (const auto& [key, value] : metadata) {
    auto* entry = model.add_metadata_props();
    entry->set_key(key);
    entry->set_value(value);
  }
  *model.mutable_graph() = graph_->proto;
  std::string bytes;
  if (!model.SerializeToString(&bytes)) throw std::runtime_error("the ONNX model could not be serialized (over 2 GiB?)");
  return bytes;
}

}  // namespace qforge::onnx_export
