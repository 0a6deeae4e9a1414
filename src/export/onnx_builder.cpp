#include "export/onnx_builder.h"

#include <ATen/ATen.h>

#include "qforge/errors.h"

namespace qforge::onnx_export {

namespace pb = qforge::onnx;

int32_t onnx_type(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return pb::TensorProto::FLOAT;
    case at::kDouble: return pb::TensorProto::DOUBLE;
    case at::kHalf: return pb::TensorProto::FLOAT16;
    case at::kBFloat16: return pb::TensorProto::BFLOAT16;
    case at::kLong: return pb::TensorProto::INT64;
    case at::kInt: return pb::TensorProto::INT32;
    case at::kShort: return pb::TensorProto::INT16;
    case at::kChar: return pb::TensorProto::INT8;
    case at::kByte: return pb::TensorProto::UINT8;
    case at::kBool: return pb::TensorProto::BOOL;
    default: throw ExportError(std::string("ONNX has no element type for ") + c10::toString(dtype));
  }
}

OnnxBuilder::OnnxBuilder(std::string graph_name) { graph_.set_name(std::move(graph_name)); }

std::string OnnxBuilder::fresh(const std::string& stem) {
  const std::string base = stem.empty() ? "v" : stem;
  const int n = used_[base]++;
  return n == 0 ? base : base + "_" + std::to_string(n);
}

namespace {

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
    const at::Tensor t = std::get<at::Tensor>(value).contiguous().cpu();
    a.set_type(pb::AttributeProto::TENSOR);
    auto* proto = a.mutable_t();
    for (int64_t d : t.sizes()) proto->add_dims(d);
    proto->set_data_type(onnx_type(t.scalar_type()));
    proto->set_raw_data(t.data_ptr(), t.numel() * t.element_size());
  }
}

// Two 4-bit codes a byte, the first element in the low nibble (ONNX's INT4/UINT4 packing).
std::string pack_int4(const at::Tensor& codes) {
  const at::Tensor c = codes.to(at::kInt).contiguous().reshape({-1});
  const int32_t* v = c.data_ptr<int32_t>();
  std::string bytes((c.numel() + 1) / 2, '\0');
  for (int64_t i = 0; i < c.numel(); ++i) {
    const auto nibble = static_cast<uint8_t>(v[i] & 0x0F);
    bytes[i / 2] = static_cast<char>(static_cast<uint8_t>(bytes[i / 2]) | (i % 2 ? nibble << 4 : nibble));
  }
  return bytes;
}

}  // namespace

std::vector<std::string> OnnxBuilder::node(const std::string& op, const std::vector<std::string>& inputs, size_t outputs,
                                           const Attributes& attributes, const std::string& stem) {
  pb::NodeProto* n = graph_.add_node();
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

std::string OnnxBuilder::initializer(const at::Tensor& value, const std::string& stem, int32_t onnx_dtype) {
  const at::Tensor t = value.detach().cpu().contiguous();
  pb::TensorProto* proto = graph_.add_initializer();
  const std::string name = fresh(stem);
  proto->set_name(name);
  for (int64_t d : t.sizes()) proto->add_dims(d);
  if (onnx_dtype == pb::TensorProto::INT4 || onnx_dtype == pb::TensorProto::UINT4) {
    proto->set_data_type(onnx_dtype);
    proto->set_raw_data(pack_int4(t));
  } else {
    proto->set_data_type(onnx_dtype ? onnx_dtype : onnx_type(t.scalar_type()));
    proto->set_raw_data(t.data_ptr(), t.numel() * t.element_size());
  }
  return name;
}

std::string OnnxBuilder::int64s(const std::vector<int64_t>& values, const std::string& stem) {
  return initializer(at::tensor(values, at::kLong), stem);
}

std::string OnnxBuilder::scalar_int64(int64_t value) { return initializer(at::scalar_tensor(value, at::kLong), "const"); }

std::string OnnxBuilder::scalar_float(double value, at::ScalarType dtype) {
  return initializer(at::scalar_tensor(value, dtype), "const");
}

namespace {
void set_type(pb::ValueInfoProto* info, at::ScalarType dtype) {
  info->mutable_type()->mutable_tensor_type()->set_elem_type(onnx_type(dtype));
}
}  // namespace

void OnnxBuilder::input(const std::string& name, at::ScalarType dtype, const std::vector<int64_t>& dims,
                        const std::vector<std::string>& dim_names) {
  pb::ValueInfoProto* info = graph_.add_input();
  info->set_name(name);
  set_type(info, dtype);
  auto* shape = info->mutable_type()->mutable_tensor_type()->mutable_shape();
  for (size_t d = 0; d < dims.size(); ++d) {
    auto* dim = shape->add_dim();
    if (dims[d] < 0)
      dim->set_dim_param(dim_names.at(d));
    else
      dim->set_dim_value(dims[d]);
  }
}

void OnnxBuilder::output(const std::string& name, at::ScalarType dtype, int64_t rank) {
  pb::ValueInfoProto* info = graph_.add_output();
  info->set_name(name);
  set_type(info, dtype);
  // The rank is known; each size is left unknown (it may follow a symbolic input axis).
  auto* shape = info->mutable_type()->mutable_tensor_type()->mutable_shape();
  for (int64_t d = 0; d < rank; ++d) shape->add_dim();
}

std::string serialize_model(const pb::GraphProto& graph, int64_t opset, const std::map<std::string, std::string>& metadata) {
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
  *model.mutable_graph() = graph;
  std::string bytes;
  if (!model.SerializeToString(&bytes)) throw ExportError("ONNX: the model could not be serialized (over 2 GiB?)");
  return bytes;
}

}  // namespace qforge::onnx_export
