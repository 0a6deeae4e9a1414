#include "export/onnx_converter.h"

#include <ATen/ATen.h>
#include <torch/csrc/jit/ir/ir.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <set>
#include <sstream>

#include "qforge/errors.h"
#include "util/text.h"

namespace qforge::onnx_export {

using torch::jit::Node;
using torch::jit::Value;

bool Val::runtime() const {
  if (!name.empty()) return true;
  for (const auto& i : items)
    if (i.runtime()) return true;
  for (const auto& [k, f] : fields)
    if (f.runtime()) return true;
  return false;
}

// An export error found where the node is not at hand: Converter::run names it.
struct UnplacedExportError : ExportError {
  explicit UnplacedExportError(const std::string& why) : ExportError(why) {}
};

at::ScalarType number_dtype(const c10::IValue& v) {
  if (v.isTensor()) return v.toTensor().scalar_type();
  if (v.isInt()) return at::kLong;
  if (v.isDouble()) return at::kFloat;  // run-time numbers travel as float32, the dtype they meet
  if (v.isBool()) return at::kBool;
  throw UnplacedExportError("a value of type " + v.tagKind() + " where a tensor or number was expected");
}

std::map<std::string, OpHandler>& op_table() {
  static std::map<std::string, OpHandler> table = [] {
    std::map<std::string, OpHandler> t;
    add_nn_ops(t);
    add_tensor_ops(t);
    add_math_ops(t);
    add_attention_ops(t);
    add_quantization_ops(t);
    add_resize_ops(t);
    add_sequence_ops(t);
    add_norm_ops(t);
    add_recurrent_ops(t);
    return t;
  }();
  return table;
}

const Val& Converter::val(const Value* v) const {
  auto found = values_.find(v);
  if (found == values_.end())
    throw ExportError("ONNX export: internal error: value %" + v->debugName() + " used before it was converted");
  return found->second;
}

at::ScalarType Converter::dtype(const Value* v) const { return number_dtype(example(v)); }

int64_t Converter::rank(const Value* v) const {
  const auto& e = example(v);
  if (e.isTensor()) return e.toTensor().dim();
  return 0;
}

int64_t Converter::static_int(const Value* v, const std::string& what) const {
  if (!is_static(v)) fail(v->node(), what + " must not depend on the inputs");
  return example(v).toInt();
}

double Converter::static_double(const Value* v, const std::string& what) const {
  if (!is_static(v)) fail(v->node(), what + " must not depend on the inputs");
  const auto& e = example(v);
  return e.isTensor() ? e.toTensor().item<double>() : e.toScalar().toDouble();
}

std::vector<int64_t> Converter::static_ints(const Value* v, const std::string& what) const {
  if (!is_static(v)) fail(v->node(), what + " must not depend on the inputs");
  const auto& e = example(v);
  if (e.isInt()) return {e.toInt()};
  return e.toIntVector();
}

std::string Converter::scalar_float(double value, at::ScalarType dtype) {
  return constant(at::scalar_tensor(value, at::TensorOptions().dtype(dtype)));
}

std::string Converter::cast(const std::string& name, at::ScalarType from, at::ScalarType to) {
  if (from == to) return name;
  return b.node1("Cast", {name}, {{"to", static_cast<int64_t>(element_type(to))}});
}

std::string Converter::tensor(const Value* v, std::optional<at::ScalarType> as) {
  const Val& x = val(v);
  const at::ScalarType own = dtype(v);
  if (!x.runtime()) {
    if (as && *as != own) {  // a constant in the dtype it meets: no Cast node
      const auto& e = x.example;
      const at::Tensor t = e.isTensor() ? e.toTensor() : at::scalar_tensor(e.toScalar(), at::kDouble);
      return constant(t.to(*as));
    }
    return materialize(x, stem(v->node()));
  }
  if (x.name.empty()) fail(v->node(), "a list or tuple of tensors where one tensor was expected");
  return as ? cast(x.name, own, *as) : x.name;
}

std::string Converter::materialize(const Val& v, const std::string& stem_hint) {
  const auto& e = v.example;
  if (e.isTensor()) {
    const at::Tensor t = e.toTensor();
    if (v.quant && options.quantized) return dequantized(v.quant, false, "");
    const std::string variant = c10::str(t.sizes(), t.strides(), t.scalar_type(), t.storage_offset());
    const std::string stem = v.origin.empty() ? (stem_hint.empty() ? "const" : stem_hint + "/const") : v.origin;
    return cached(std::make_shared<at::Tensor>(t), t.storage().data(), variant, [&] { return constant(t, stem); });
  }
  if (e.isInt() || e.isDouble() || e.isBool()) return constant(at::scalar_tensor(e.toScalar(), number_dtype(e)));
  if (e.isIntList()) return b.int64s(e.toIntVector());
  if (e.isNone()) return "";  // ONNX's empty name: an optional input left out
  throw ExportError("ONNX export: a constant of type " + e.tagKind() + " cannot be an ONNX tensor");
}

namespace {

// The narrowest ONNX integer type holding [qmin, qmax]; 4-bit types from opset 21.
ElementType code_type(int64_t qmin, int64_t qmax, int64_t opset) {
  if (opset >= 21 && qmin >= -8 && qmax <= 7) return ElementType::Int4;
  if (opset >= 21 && qmin >= 0 && qmax <= 15) return ElementType::UInt4;
  if (qmin >= -128 && qmax <= 127) return ElementType::Int8;
  return ElementType::UInt8;
}

}  // namespace

std::string Converter::cached(std::shared_ptr<const void> owner, const void* address, const std::string& variant,
                              const std::function<std::string()>& make) {
  const auto key = std::make_pair(address, variant);
  if (auto found = constants_.find(key); found != constants_.end()) return found->second.name;
  const std::string name = make();
  constants_[key] = {name, std::move(owner)};
  return name;
}

std::string Converter::dequantized(const std::shared_ptr<QuantizedConstant>& quant, bool transposed,
                                   const std::string& op) {
  return cached(quant, quant.get(), std::string(transposed ? "T" : "") + op,
                [&] { return write_dequantized(*quant, transposed, op); });
}

std::string Converter::write_dequantized(const QuantizedConstant& q, bool transposed, const std::string& op) {

  at::Tensor codes = q.codes, scale = q.scale.to(at::kFloat), zero = q.zero_point;
  int64_t axis = q.axis, block = 0;
  std::vector<int64_t> shape = q.shape.empty() ? codes.sizes().vec() : q.shape;
  bool reshape_after = shape != codes.sizes().vec();
  // Groups of a 2-D weight: the quantizer saw [out * groups, group] rows; ONNX's
  // blocked DequantizeLinear (opset 21) reads [out, in] with blocks along axis 1.
  if (reshape_after && shape.size() == 2 && codes.dim() == 2 && axis == 0 && options.opset >= 21 &&
      shape[1] % codes.size(1) == 0 && codes.size(0) == shape[0] * (shape[1] / codes.size(1))) {
    const int64_t groups = shape[1] / codes.size(1);
    block = codes.size(1);
    codes = codes.reshape(shape);
    scale = scale.reshape({shape[0], groups});
    zero = zero.reshape({shape[0], groups});
    axis = 1;
    reshape_after = false;
  }
  bool transpose_after = false;
  if (transposed) {
    if (!reshape_after && codes.dim() == 2) {
      codes = codes.t().contiguous();
      if (block) {
        scale = scale.t().contiguous();
        zero = zero.t().contiguous();
      }
      if (axis >= 0) axis = 1 - axis;
    } else {
      transpose_after = true;
    }
  }
  if (axis < 0) {
    scale = scale.reshape({});
    zero = zero.reshape({});
  }
  const ElementType type = code_type(q.qmin, q.qmax, options.opset);
  const std::string stem = q.layer.empty() ? "weight" : q.layer + ".weight";
  const std::string codes_name = b.initializer(raw_codes(codes, type), stem + "_quantized");
  const std::string scale_name = constant(scale, stem + "_scale");
  const std::string zero_name = b.initializer(raw_codes(zero, type), stem + "_zero_point");
  Attributes attributes;
  if (axis >= 0) attributes.push_back({"axis", axis});
  if (block) attributes.push_back({"block_size", block});
  std::string out = b.node1("DequantizeLinear", {codes_name, scale_name, zero_name}, attributes, stem);
  if (reshape_after) out = b.node1("Reshape", {out, b.int64s(shape)}, {}, stem);
  if (transpose_after) out = b.node1("Transpose", {out}, {{"perm", std::vector<int64_t>{1, 0}}}, stem);

  QuantizerRecord record;
  record.layer = q.layer;
  record.weight = true;
  record.axis = axis;
  record.qmin = q.qmin;
  record.qmax = q.qmax;
  record.block_size = block;
  record.op = op;
  record.scale = scale;
  record.zero_point = zero;
  quantizers.push_back(record);
  return out;
}

std::string Converter::weight(const Value* v, bool transposed, const std::string& op) {
  const Val& w = val(v);
  if (w.runtime()) {
    const std::string name = tensor(v);
    return transposed ? b.node1("Transpose", {name}, {{"perm", std::vector<int64_t>{1, 0}}}) : name;
  }
  if (w.quant && options.quantized) return dequantized(w.quant, transposed, op);
  if (!transposed) return materialize(w, stem(v->node()));
  const at::Tensor t = w.example.toTensor();
  return cached(std::make_shared<at::Tensor>(t), t.storage().data(), c10::str("T", t.sizes(), t.strides()), [&] {
    return constant(t.t().contiguous(), (w.origin.empty() ? std::string("weight") : w.origin) + "_t");
  });
}

std::string Converter::int64_list(const Value* v) {
  const Val& x = val(v);
  if (!x.runtime()) {
    const auto& e = x.example;
    if (e.isTensor()) return constant(e.toTensor().to(at::kLong).reshape({-1}));
    return b.int64s(static_ints(v, "a size list"));
  }
  if (!x.name.empty()) return cast(x.name, dtype(v), at::kLong);
  return int64_list(x.items);
}

std::string Converter::int64_list(const std::vector<Val>& items) {
  if (std::none_of(items.begin(), items.end(), [](const Val& item) { return item.runtime(); })) {
    std::vector<int64_t> values;
    for (const auto& item : items) values.push_back(item.example.toInt());
    return b.int64s(values);
  }
  std::vector<std::string> parts;
  const auto axes = b.int64s({0});
  for (const auto& item : items) {
    if (!item.runtime()) {
      parts.push_back(b.int64s({item.example.toInt()}));
    } else {
      const std::string n = cast(item.name, number_dtype(item.example), at::kLong);
      parts.push_back(b.node1("Unsqueeze", {n, axes}));
    }
  }
  return b.node1("Concat", parts, {{"axis", int64_t{0}}});
}

std::string Converter::shape_of(const std::string& tensor_name) {
  auto found = shapes_.find(tensor_name);
  if (found != shapes_.end()) return found->second;
  return shapes_[tensor_name] = b.node1("Shape", {tensor_name});
}

void Converter::set(const Value* v, const std::string& onnx_name) {
  Val x;
  x.name = onnx_name;
  values_[v] = std::move(x);
}

void Converter::set(const Value* v, Val value) { values_[v] = std::move(value); }

namespace {

// The module path a node was inlined from ("layer1.0.conv1"), when the graph kept it.
std::string module_path(const Node* n) {
  std::string path;
  if (auto stack = n->callstack()) {
    for (const auto& entry : (*stack)->vec()) {
      const auto& info = std::get<2>(entry);
      if (!info || info->instance_name().empty()) continue;
      path += (path.empty() ? "" : ".") + info->instance_name();
    }
  }
  return path;
}

void attach_examples(Val& v, const c10::IValue& example) {
  v.example = example;
  if (v.items.empty()) return;
  std::vector<c10::IValue> elements;
  if (example.isList())
    for (const auto& e : example.toListRef()) elements.push_back(e);
  else if (example.isTuple())
    elements = example.toTupleRef().elements().vec();
  for (size_t i = 0; i < v.items.size() && i < elements.size(); ++i) attach_examples(v.items[i], elements[i]);
}

bool is_fake_quantize(const std::string& kind) {
  return kind.rfind("aten::fake_quantize_per_", 0) == 0 || kind.rfind("aten::_fake_quantize_learnable_per_", 0) == 0;
}

bool keeps_values(const std::string& kind) {
  return kind == "aten::reshape" || kind == "aten::view" || kind == "aten::contiguous" || kind == "aten::detach" ||
         kind == "aten::clone" || kind == "aten::to" || kind == "aten::type_as";
}

}  // namespace

std::string Converter::stem(const Node* n) const {
  if (!n) return "";
  return module_path(n);
}

std::string Converter::where(const Node* n) const {
  std::vector<std::string> parts;
  const std::string path = module_path(n);
  if (!path.empty()) parts.push_back("layer '" + path + "'");
  if (auto flc = n->sourceRange().file_line_col()) {
    const auto& [file, line, col] = *flc;
    parts.push_back(file + ":" + std::to_string(line));
  } else if (n->sourceRange().source()) {
    const auto& range = n->sourceRange();
    const size_t line = range.source()->lineno_for_offset(range.start()) + 1;
    std::string text = range.text().str();
    if (text.size() > 60) text = text.substr(0, 57) + "...";
    parts.push_back("line " + std::to_string(line) + " of the model's code: " + text);
  }
  return parts.empty() ? "" : " (" + join(parts, ", ") + ")";
}

void Converter::fail(const Node* n, const std::string& why) const {
  throw ExportError("ONNX export: " + std::string(n->kind().toQualString()) + where(n) + ": " + why);
}

std::string Converter::layer_of(const Val& v) const {
  std::string origin = v.origin;
  const std::string prefix = "_qforge__";
  if (origin.rfind(prefix, 0) == 0) {  // a quantization parameter: "_qforge__<layer>__input_scale"
    const auto end = origin.rfind("__");
    const std::string sanitized =
        origin.substr(prefix.size(), end == std::string::npos ? std::string::npos : end - prefix.size());
    auto found = options.layer_of_attribute.find(sanitized);
    return found != options.layer_of_attribute.end() ? found->second : sanitized;
  }
  for (const std::string suffix : {".weight", ".in_proj_weight"})
    if (origin.size() > suffix.size() && origin.compare(origin.size() - suffix.size(), suffix.size(), suffix) == 0)
      return origin.substr(0, origin.size() - suffix.size());
  return origin;
}

void Converter::evaluate(Node* n, std::vector<c10::IValue>& outputs) const {
  torch::jit::Stack stack;
  for (const Value* in : n->inputs()) stack.push_back(example(in));
  try {
    // The structural ops are built by the interpreter itself, not by registered operators.
    const auto kind = n->kind();
    if (kind == c10::prim::ListConstruct) {
      c10::impl::GenericList list(n->output()->type()->expectRef<c10::ListType>().getElementType());
      for (auto& v : stack) list.push_back(v);
      stack = {c10::IValue(list)};
    } else if (kind == c10::prim::TupleConstruct) {
      stack = {c10::ivalue::Tuple::create(std::move(stack))};
    } else if (kind == c10::prim::ListUnpack) {
      const auto list = stack.at(0).toListRef().vec();
      stack.assign(list.begin(), list.end());
    } else if (kind == c10::prim::TupleUnpack) {
      stack = stack.at(0).toTupleRef().elements().vec();
    } else if (kind == c10::prim::DictConstruct) {
      const auto& type = n->output()->type()->expectRef<c10::DictType>();
      c10::impl::GenericDict dict(type.getKeyType(), type.getValueType());
      for (size_t i = 0; i + 1 < stack.size(); i += 2) dict.insert(stack[i], stack[i + 1]);
      stack = {c10::IValue(dict)};
    } else {
      n->getOperation()(stack);
    }
  } catch (const std::exception& e) {
    std::string message = e.what();
    message.erase(0, message.find_first_not_of("\n "));
    message = message.substr(0, message.find('\n'));
    fail(n, "evaluating it on the example inputs failed: " + message);
  }
  outputs = std::move(stack);
}

// A node whose inputs are all constants: its outputs are constants too. A
// fake-quant op on a constant (a weight) keeps what the file needs: the
// integer codes, scale and zero point.
void Converter::fold(Node* n, std::vector<c10::IValue>& outputs) {
  const std::string kind = n->kind().toQualString();
  for (size_t i = 0; i < n->outputs().size(); ++i) {
    Val v;
    v.example = outputs.at(i);
    if (i == 0 && !n->inputs().empty()) {
      const Val& in = val(n->input(0));
      if (keeps_values(kind) && v.example.isTensor()) {
        v.origin = in.origin;
        if (in.quant) {
          v.quant = std::make_shared<QuantizedConstant>(*in.quant);
          v.quant->shape = v.example.toTensor().sizes().vec();
        }
      }
      if (is_fake_quantize(kind) && in.example.isTensor()) {
        const bool per_channel = kind.find("per_channel") != std::string::npos;
        auto q = std::make_shared<QuantizedConstant>();
        const at::Tensor x = in.example.toTensor().to(at::kFloat);
        const auto& s = example(n->input(1));
        const auto& z = example(n->input(2));
        q.get()->scale = (s.isTensor() ? s.toTensor() : at::scalar_tensor(s.toDouble())).to(at::kFloat).reshape({-1});
        q.get()->zero_point = (z.isTensor() ? z.toTensor() : at::scalar_tensor(z.toInt()))
                                  .to(at::kFloat)
                                  .round()
                                  .to(at::kLong)
                                  .reshape({-1});
        q->axis = per_channel ? example(n->input(3)).toInt() : -1;
        q->qmin = example(n->input(per_channel ? 4 : 3)).toInt();
        q->qmax = example(n->input(per_channel ? 5 : 4)).toInt();
        std::vector<int64_t> view(x.dim(), 1);
        at::Tensor scale = q->scale, zero = q->zero_point;
        if (q->axis >= 0) {
          view[q->axis] = x.size(q->axis);
          scale = scale.view(view);
          zero = zero.view(view);
        } else {
          scale = scale.reshape({});
          zero = zero.reshape({});
        }
        // ATen's fake-quant kernels: round(x * (1 / scale)) + zero point, ties to even, clamped.
        q->codes = at::clamp(at::round(x * (1.0f / scale)) + zero.to(at::kFloat), static_cast<double>(q->qmin),
                             static_cast<double>(q->qmax))
                       .to(at::kLong);
        q->layer = layer_of(in);
        v.quant = q;
        v.origin = in.origin;
      }
    }
    values_[n->output(i)] = std::move(v);
  }
}

void Converter::run(torch::jit::Block* block) {
  for (Node* n : block->nodes()) {
    try {
      convert(n);
    } catch (const UnplacedExportError& e) {
      fail(n, e.what());
    }
  }
}

// A loop whose trip count and condition do not depend on the inputs (scripted
// code's `for i in range(n)` and list comprehensions, as in F.interpolate)
// runs here, iteration by iteration: the run-time work of each becomes ONNX
// nodes, and the carried values pass from one iteration to the next.
void Converter::unroll(Node* n) {
  constexpr int64_t kMaxIterations = 4096;  // beyond it the file would grow without bound
  const Val &trips = val(n->input(0)), &start = val(n->input(1));
  const std::string traced = "; export a traced model (torch.jit.trace) instead";
  if (trips.runtime() || start.runtime())
    fail(n, "a loop whose trip count or condition is computed from the inputs has no static ONNX form" + traced);
  const int64_t max_trips = trips.example.toInt();
  bool go_on = start.example.toBool();
  std::vector<Val> carried;
  for (size_t i = 2; i < n->inputs().size(); ++i) carried.push_back(val(n->input(i)));
  torch::jit::Block* body = n->blocks()[0];
  for (int64_t i = 0; go_on && i < max_trips; ++i) {
    if (i == kMaxIterations)
      fail(n, "a loop of more than " + std::to_string(kMaxIterations) + " iterations would be unrolled" + traced);
    Val index;
    index.example = i;
    values_[body->inputs()[0]] = index;
    for (size_t k = 0; k < carried.size(); ++k) values_[body->inputs()[k + 1]] = carried[k];
    run(body);
    const Val& condition = val(body->outputs()[0]);
    if (condition.runtime())
      fail(n, "a loop that stops on a value computed from the inputs has no static ONNX form" + traced);
    go_on = condition.example.toBool();
    for (size_t k = 0; k < carried.size(); ++k) carried[k] = val(body->outputs()[k + 1]);
  }
  for (size_t k = 0; k < carried.size(); ++k) values_[n->output(k)] = carried[k];
}

// Tests only: QFORGE_TEST_CORRUPT_OP=<op> makes that op's ONNX output wrong
// (a Sigmoid after it), as a converter fault would, so the tests can show that
// the check on fresh inputs refuses the file and names the node.
void Converter::plant_fault_for_tests(const Node* n) {
  static const char* corrupt = std::getenv("QFORGE_TEST_CORRUPT_OP");
  if (!corrupt || n->kind().toQualString() != std::string(corrupt)) return;
  auto found = values_.find(n->output(0));
  if (found != values_.end() && !found->second.name.empty())
    found->second.name = b.node1("Sigmoid", {found->second.name});
}

// Dropout and its kin, and attention with dropout, are nondeterministic ops, but
// they draw nothing with `train` false (eval mode) or a probability of 0.
bool Converter::draws_random_numbers(const Node* n) const {
  if (!n->isNondeterministic()) return false;
  const auto* schema = n->maybeSchema();
  if (!schema) return true;
  const auto argument = [&](const char* name) -> c10::optional<c10::IValue> {
    const auto index = schema->argumentIndexWithName(name);
    if (!index) return c10::nullopt;
    const auto found = values_.find(n->input(*index));
    if (found == values_.end()) return c10::nullopt;
    return found->second.example;
  };
  const auto train = argument("train");
  if (train && train->isBool() && !train->toBool()) return false;
  for (const char* probability : {"p", "dropout_p"}) {
    const auto p = argument(probability);
    if (p && p->isDouble() && p->toDouble() == 0.0) return false;
  }
  return true;
}

void Converter::convert(Node* n) {
  const auto kind = n->kind();
  if (kind == c10::prim::Constant) {
    Val v;
    v.example = *torch::jit::toIValue(n->output());
    values_[n->output()] = std::move(v);
    return;
  }
  if (kind == c10::prim::GetAttr) {
    const Val& object = val(n->input());
    const std::string name = n->s(c10::attr::name);
    Val v;
    v.example = object.example.toObject()->getAttr(name);
    v.origin = object.origin.empty() ? name : object.origin + "." + name;
    values_[n->output()] = std::move(v);
    return;
  }
  if (kind == c10::prim::If) {
    const Val& condition = val(n->input(0));
    if (condition.runtime())
      fail(n,
           "a branch on a value computed from the inputs (data-dependent control flow) has no static ONNX form; "
           "export a traced model (torch.jit.trace) instead");
    torch::jit::Block* taken = n->blocks()[condition.example.toBool() ? 0 : 1];
    run(taken);
    for (size_t i = 0; i < n->outputs().size(); ++i) values_[n->output(i)] = val(taken->outputs()[i]);
    return;
  }
  if (kind == c10::prim::Loop) return unroll(n);
  if (kind == c10::prim::RaiseException) fail(n, "the model raises an exception on the example inputs");
  if (kind == c10::aten::warn) return;  // a Python warning: nothing to compute, and the interpreter's own op

  // A random draw (rand, bernoulli, dropout while training) would fold into the one sample the
  // examples gave, and the file would repeat it for every input.
  if (draws_random_numbers(n))
    fail(n, "draws random numbers at run time, which qforge does not write into the file; call eval() before "
            "saving the model, or draw them outside it");
  std::vector<c10::IValue> outputs;
  evaluate(n, outputs);
  // x.new_zeros(size) and its kin take only x's dtype and device: a constant
  // size makes them constants (Swin's attention masks, built in place).
  static const std::set<std::string> sized_by_arguments = {"aten::new_zeros", "aten::new_ones", "aten::new_full",
                                                           "aten::new_empty"};
  const size_t first_read = sized_by_arguments.count(kind.toQualString()) ? 1 : 0;
  bool runtime = false;
  for (size_t i = first_read; i < n->inputs().size(); ++i) runtime = runtime || val(n->input(i)).runtime();
  if (!runtime) {
    fold(n, outputs);
    return;
  }
  const std::string op = kind.toQualString();
  auto handler = op_table().find(op);
  if (handler == op_table().end()) {
    const std::string sizes =
        options.dynamic ? "; if it computes only from sizes, `dynamic: false` makes them constants" : "";
    fail(n, "no ONNX mapping for this op (the ops that map are listed in docs/deployment.md, \"Operators\")" +
                sizes + "; deployment_settings.target: libtorch deploys the TorchScript model as it is");
  }
  results_ = outputs;
  handler->second(*this, n);
  plant_fault_for_tests(n);
  for (size_t i = 0; i < n->outputs().size(); ++i) {
    auto found = values_.find(n->output(i));
    if (found == values_.end()) {
      if (n->output(i)->uses().empty()) continue;  // an output nobody reads (the weights of attention, ...)
      fail(n, "internal error: output " + std::to_string(i) + " was not converted");
    }
    attach_examples(found->second, outputs.at(i));
    const auto& e = outputs.at(i);
    // Cloned: a later in-place op (relu_, hardtanh_) changes the tensor the node returned.
    if (options.probe && !found->second.name.empty() && e.isTensor() && at::isFloatingType(e.toTensor().scalar_type()))
      probes.push_back({found->second.name, e.toTensor().clone(), std::string(n->kind().toQualString()) + where(n)});
  }
  // An in-place op: scripted graphs go on reading the value it changed.
  if (op.back() == '_' && op.size() > 2 && op[op.size() - 2] != '_' && !n->inputs().empty() && n->outputs().size() == 1)
    values_[n->input(0)] = values_.at(n->output(0));
}

}  // namespace qforge::onnx_export
