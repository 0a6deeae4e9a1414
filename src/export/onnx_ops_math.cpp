// Elementwise arithmetic, comparisons, activations, reductions and dtype casts.
#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "export/onnx_ops.h"

namespace qforge::onnx_export {

std::string unsqueeze(Converter& cx, const std::string& x, const std::vector<int64_t>& axes) {
  return cx.b.node1("Unsqueeze", {x, cx.b.int64s(axes)});
}

std::string squeeze(Converter& cx, const std::string& x, const std::vector<int64_t>& axes) {
  if (axes.empty()) return cx.b.node1("Squeeze", {x});
  return cx.b.node1("Squeeze", {x, cx.b.int64s(axes)});
}

std::string reduce(Converter& cx, const std::string& op, const std::string& x,
                   const std::optional<std::vector<int64_t>>& axes, bool keepdims) {
  const Attributes keep = {{"keepdims", static_cast<int64_t>(keepdims)}};
  if (!axes || axes->empty()) return cx.b.node1(op, {x}, keep);
  if (op == "ReduceSum" || cx.options.opset >= 18) return cx.b.node1(op, {x, cx.b.int64s(*axes)}, keep);
  Attributes attributes = keep;
  attributes.push_back({"axes", *axes});
  return cx.b.node1(op, {x}, attributes);
}

std::string slice1d(Converter& cx, const std::string& x, int64_t begin, int64_t end) {
  return cx.b.node1("Slice", {x, cx.b.int64s({begin}), cx.b.int64s({end}), cx.b.int64s({0})});
}

void same_dtype_op(Converter& cx, const Node* n, const std::string& op, const std::vector<size_t>& inputs,
                   const Attributes& attributes) {
  const at::ScalarType t = cx.result_dtype();
  std::vector<std::string> names;
  for (size_t i : inputs) names.push_back(cx.tensor(n->input(i), t));
  cx.set(n->output(0), cx.b.node1(op, names, attributes, cx.stem(n)));
}

void pass_through(Converter& cx, const Node* n) { cx.alias(n->output(0), n->input(0)); }

namespace {

// add / sub with alpha: a + alpha·b.
void add_or_sub(Converter& cx, const Node* n, const std::string& op) {
  const at::ScalarType t = cx.result_dtype();
  const std::string a = cx.tensor(n->input(0), t);
  std::string b = cx.tensor(n->input(1), t);
  if (n->inputs().size() > 2 && !cx.is_none(n->input(2))) {
    const double alpha = cx.static_double(n->input(2), "alpha");
    if (alpha != 1.0) b = cx.b.node1("Mul", {b, cx.scalar_float(alpha, t)});
  }
  cx.set(n->output(0), cx.b.node1(op, {a, b}, {}, cx.stem(n)));
}

void division(Converter& cx, const Node* n) {
  const at::ScalarType t = cx.result_dtype();
  std::string y = cx.b.node1("Div", {cx.tensor(n->input(0), t), cx.tensor(n->input(1), t)}, {}, cx.stem(n));
  if (n->inputs().size() > 2 && cx.example(n->input(2)).isString()) {
    const std::string mode = cx.example(n->input(2)).toStringRef();
    if (mode == "floor" && at::isFloatingType(t)) y = cx.b.node1("Floor", {y});
    if (mode == "trunc" && at::isFloatingType(t)) y = cx.cast(cx.cast(y, t, at::kLong), at::kLong, t);
  }
  cx.set(n->output(0), y);
}

// Comparisons compute in the inputs' common dtype and give bool.
void comparison(Converter& cx, const Node* n, const std::string& op, bool negate) {
  const auto& a = cx.example(n->input(0));
  const auto& b = cx.example(n->input(1));
  at::ScalarType common = number_dtype(a);
  if (a.isTensor() && b.isTensor())
    common = at::result_type(a.toTensor(), b.toTensor());
  else if (a.isTensor())
    common = at::result_type(a.toTensor(), b.toScalar());
  else if (b.isTensor())
    common = at::result_type(b.toTensor(), a.toScalar());
  else
    common = at::promote_types(number_dtype(a), number_dtype(b));
  std::string y = cx.b.node1(op, {cx.tensor(n->input(0), common), cx.tensor(n->input(1), common)}, {}, cx.stem(n));
  if (negate) y = cx.b.node1("Not", {y});
  cx.set(n->output(0), y);
}

// And / Or / Xor / Not: logical on bools (masks); on integers the bitwise op
// (opset 18), as torch computes `&`, `|`, `^` and `~` there.
void logical(Converter& cx, const Node* n, const std::string& op, bool bitwise_on_integers = false) {
  const at::ScalarType dt = cx.result_dtype();
  if (bitwise_on_integers && dt != at::kBool) {
    if (cx.options.opset < 18) cx.fail(n, "bitwise operations on integers need opset 18 or later");
    return same_dtype_op(cx, n, "Bitwise" + op,
                         n->inputs().size() == 1 ? std::vector<size_t>{0} : std::vector<size_t>{0, 1});
  }
  std::vector<std::string> names;
  for (const Value* v : n->inputs()) names.push_back(cx.tensor(v, at::kBool));
  std::string y = cx.b.node1(op, names, {}, cx.stem(n));
  cx.set(n->output(0), cx.cast(y, at::kBool, dt));
}

void unary(Converter& cx, const Node* n, const std::string& op, const Attributes& attributes = {}) {
  same_dtype_op(cx, n, op, {0}, attributes);
}

// Clip with optional bounds in the input's dtype (hardtanh, relu6, clamp).
void clip(Converter& cx, const Node* n, const std::optional<double>& lo, const std::optional<double>& hi) {
  const at::ScalarType t = cx.result_dtype();
  const std::string x = cx.tensor(n->input(0), t);
  std::vector<std::string> inputs = {x, lo ? cx.scalar_float(*lo, t) : "", hi ? cx.scalar_float(*hi, t) : ""};
  if (!hi) inputs.pop_back();
  cx.set(n->output(0), cx.b.node1("Clip", inputs, {}, cx.stem(n)));
}

std::optional<double> optional_bound(Converter& cx, const Value* v) {
  if (cx.is_none(v)) return std::nullopt;
  return cx.static_double(v, "a clamp bound");
}

// clamp(x, min, max) with bounds that may be tensors computed at run time.
void clamp(Converter& cx, const Node* n) {
  if (cx.is_static(n->input(1)) && cx.is_static(n->input(2)) && !cx.example(n->input(1)).isTensor() &&
      !cx.example(n->input(2)).isTensor())
    return clip(cx, n, optional_bound(cx, n->input(1)), optional_bound(cx, n->input(2)));
  const at::ScalarType t = cx.result_dtype();
  std::string y = cx.tensor(n->input(0), t);
  if (!cx.is_none(n->input(1))) y = cx.b.node1("Max", {y, cx.tensor(n->input(1), t)});
  if (!cx.is_none(n->input(2))) y = cx.b.node1("Min", {y, cx.tensor(n->input(2), t)});
  cx.set(n->output(0), y);
}

void gelu(Converter& cx, const Node* n) {
  const at::ScalarType t = cx.result_dtype();
  const std::string x = cx.tensor(n->input(0), t);
  const std::string approximate =
      n->inputs().size() > 1 && cx.example(n->input(1)).isString() ? cx.example(n->input(1)).toStringRef() : "none";
  if (cx.options.opset >= 20) {
    cx.set(n->output(0), cx.b.node1("Gelu", {x}, {{"approximate", approximate}}, cx.stem(n)));
    return;
  }
  auto& b = cx.b;
  std::string inner;
  if (approximate == "tanh") {  // tanh(sqrt(2/pi) (x + 0.044715 x^3))
    const std::string cube = b.node1("Mul", {b.node1("Mul", {x, x}), x});
    const std::string sum = b.node1("Add", {x, b.node1("Mul", {cube, cx.scalar_float(0.044715, t)})});
    inner = b.node1("Tanh", {b.node1("Mul", {sum, cx.scalar_float(std::sqrt(2.0 / M_PI), t)})});
  } else {  // erf(x / sqrt 2)
    inner = b.node1("Erf", {b.node1("Div", {x, cx.scalar_float(std::sqrt(2.0), t)})});
  }
  const std::string half_x = b.node1("Mul", {x, cx.scalar_float(0.5, t)});
  cx.set(n->output(0), b.node1("Mul", {half_x, b.node1("Add", {inner, cx.scalar_float(1.0, t)})}, {}, cx.stem(n)));
}

void silu(Converter& cx, const Node* n) {
  const std::string x = cx.tensor(n->input(0));
  cx.set(n->output(0), cx.b.node1("Mul", {x, cx.b.node1("Sigmoid", {x})}, {}, cx.stem(n)));
}

void softmax(Converter& cx, const Node* n, const std::string& op) {
  const int64_t axis = normalized_axis(cx.static_int(n->input(1), "the softmax dim"), cx.rank(n->input(0)));
  const std::string x = cx.tensor(n->input(0), cx.result_dtype());
  cx.set(n->output(0), cx.b.node1(op, {x}, {{"axis", axis}}, cx.stem(n)));
}

// The dims of a reduction: an int list, one int, or None (every axis).
std::optional<std::vector<int64_t>> reduction_axes(Converter& cx, const Value* dims, int64_t rank) {
  if (cx.is_none(dims)) return std::nullopt;
  std::vector<int64_t> axes = cx.static_ints(dims, "the reduced dims");
  if (axes.empty()) return std::nullopt;
  for (auto& a : axes) a = normalized_axis(a, rank);
  return axes;
}

// mean / sum (x, dims, keepdim, dtype) or (x, dtype).
void reduction(Converter& cx, const Node* n, const std::string& op) {
  const at::ScalarType t = cx.result_dtype();
  const std::string x = cx.tensor(n->input(0), t);
  const bool has_dims = n->inputs().size() >= 3 && !cx.example(n->input(1)).isScalar();
  const auto axes = has_dims ? reduction_axes(cx, n->input(1), cx.rank(n->input(0))) : std::nullopt;
  const bool keep = has_dims && cx.example(n->input(2)).toBool();
  cx.set(n->output(0), reduce(cx, op, x, axes, keep));
}

// amax / amin (x, dims, keepdim).
void extremum(Converter& cx, const Node* n, const std::string& op) {
  const auto axes = reduction_axes(cx, n->input(1), cx.rank(n->input(0)));
  cx.set(n->output(0), reduce(cx, op, cx.tensor(n->input(0)), axes, cx.example(n->input(2)).toBool()));
}

// max / min: of a tensor, of two tensors, or along a dim with the indices.
void max_or_min(Converter& cx, const Node* n, bool is_max) {
  const std::string reduce_op = is_max ? "ReduceMax" : "ReduceMin";
  if (n->inputs().size() == 1)
    return cx.set(n->output(0), reduce(cx, reduce_op, cx.tensor(n->input(0)), std::nullopt, false));
  if (cx.example(n->input(1)).isTensor()) return same_dtype_op(cx, n, is_max ? "Max" : "Min", {0, 1});
  const int64_t axis = normalized_axis(cx.static_int(n->input(1), "the dim"), cx.rank(n->input(0)));
  const bool keep = cx.example(n->input(2)).toBool();
  const std::string x = cx.tensor(n->input(0));
  cx.set(n->output(0), reduce(cx, reduce_op, x, std::vector<int64_t>{axis}, keep));
  cx.set(n->output(1), cx.b.node1(is_max ? "ArgMax" : "ArgMin", {x}, {{"axis", axis}, {"keepdims", int64_t{keep}}}));
}

void argmax(Converter& cx, const Node* n, const std::string& op) {
  std::string x = cx.tensor(n->input(0));
  int64_t axis = 0;
  if (cx.is_none(n->input(1))) {
    x = cx.b.node1("Reshape", {x, cx.b.int64s({-1})});
  } else {
    axis = normalized_axis(cx.static_int(n->input(1), "the dim"), cx.rank(n->input(0)));
  }
  const bool keep = cx.example(n->input(2)).toBool();
  cx.set(n->output(0), cx.b.node1(op, {x}, {{"axis", axis}, {"keepdims", int64_t{keep}}}, cx.stem(n)));
}

// to / type_as / Int / Float: a Cast when the dtype changes.
void convert_dtype(Converter& cx, const Node* n) {
  const at::ScalarType from = cx.dtype(n->input(0));
  const at::ScalarType to = cx.result_dtype();
  if (from == to) return pass_through(cx, n);
  cx.set(n->output(0), cx.cast(cx.tensor(n->input(0)), from, to));
}

}  // namespace

void add_math_ops(std::map<std::string, OpHandler>& t) {
  for (const std::string suffix : {"", "_"}) {
    t["aten::add" + suffix] = [](Converter& cx, Node* n) {
      if (cx.example(n->input(0)).isList()) return concat_lists(cx, n);
      add_or_sub(cx, n, "Add");
    };
    t["aten::sub" + suffix] = [](Converter& cx, Node* n) { add_or_sub(cx, n, "Sub"); };
    t["aten::mul" + suffix] = [](Converter& cx, Node* n) { same_dtype_op(cx, n, "Mul", {0, 1}); };
    t["aten::div" + suffix] = [](Converter& cx, Node* n) { division(cx, n); };
    t["aten::pow" + suffix] = [](Converter& cx, Node* n) { same_dtype_op(cx, n, "Pow", {0, 1}); };
    t["aten::relu" + suffix] = [](Converter& cx, Node* n) { unary(cx, n, "Relu"); };
    t["aten::sigmoid" + suffix] = [](Converter& cx, Node* n) { unary(cx, n, "Sigmoid"); };
    t["aten::tanh" + suffix] = [](Converter& cx, Node* n) { unary(cx, n, "Tanh"); };
    t["aten::hardswish" + suffix] = [](Converter& cx, Node* n) { unary(cx, n, "HardSwish"); };
    t["aten::hardsigmoid" + suffix] = [](Converter& cx, Node* n) {
      unary(cx, n, "HardSigmoid", {{"alpha", 1.0 / 6.0}, {"beta", 0.5}});
    };
    t["aten::silu" + suffix] = [](Converter& cx, Node* n) { silu(cx, n); };
    t["aten::hardtanh" + suffix] = [](Converter& cx, Node* n) {
      clip(cx, n, cx.static_double(n->input(1), "min_val"), cx.static_double(n->input(2), "max_val"));
    };
    t["aten::clamp" + suffix] = [](Converter& cx, Node* n) { clamp(cx, n); };
    t["aten::exp" + suffix] = [](Converter& cx, Node* n) { unary(cx, n, "Exp"); };
    t["aten::log" + suffix] = [](Converter& cx, Node* n) { unary(cx, n, "Log"); };
    t["aten::sqrt" + suffix] = [](Converter& cx, Node* n) { unary(cx, n, "Sqrt"); };
    t["aten::neg" + suffix] = [](Converter& cx, Node* n) { unary(cx, n, "Neg"); };
    t["aten::abs" + suffix] = [](Converter& cx, Node* n) { unary(cx, n, "Abs"); };
    t["aten::erf" + suffix] = [](Converter& cx, Node* n) { unary(cx, n, "Erf"); };
    t["aten::floor" + suffix] = [](Converter& cx, Node* n) { unary(cx, n, "Floor"); };
    t["aten::ceil" + suffix] = [](Converter& cx, Node* n) { unary(cx, n, "Ceil"); };
    t["aten::sin" + suffix] = [](Converter& cx, Node* n) { unary(cx, n, "Sin"); };
    t["aten::cos" + suffix] = [](Converter& cx, Node* n) { unary(cx, n, "Cos"); };
    t["aten::reciprocal" + suffix] = [](Converter& cx, Node* n) { unary(cx, n, "Reciprocal"); };
    t["aten::leaky_relu" + suffix] = [](Converter& cx, Node* n) {
      unary(cx, n, "LeakyRelu", {{"alpha", cx.static_double(n->input(1), "negative_slope")}});
    };
    t["aten::elu" + suffix] = [](Converter& cx, Node* n) {
      unary(cx, n, "Elu", {{"alpha", cx.static_double(n->input(1), "alpha")}});
    };
    t["aten::masked_fill" + suffix] = [](Converter& cx, Node* n) {
      const at::ScalarType dt = cx.result_dtype();
      cx.set(n->output(0),
             cx.b.node1("Where",
                        {cx.tensor(n->input(1), at::kBool), cx.tensor(n->input(2), dt), cx.tensor(n->input(0), dt)}, {},
                        cx.stem(n)));
    };
  }
  t["aten::rsub"] = [](Converter& cx, Node* n) {  // other - alpha·self
    const at::ScalarType dt = cx.result_dtype();
    std::string self = cx.tensor(n->input(0), dt);
    const double alpha = n->inputs().size() > 2 ? cx.static_double(n->input(2), "alpha") : 1.0;
    if (alpha != 1.0) self = cx.b.node1("Mul", {self, cx.scalar_float(alpha, dt)});
    cx.set(n->output(0), cx.b.node1("Sub", {cx.tensor(n->input(1), dt), self}, {}, cx.stem(n)));
  };
  t["aten::rsqrt"] = [](Converter& cx, Node* n) {
    cx.set(n->output(0), cx.b.node1("Reciprocal", {cx.b.node1("Sqrt", {cx.tensor(n->input(0), cx.result_dtype())})}));
  };
  t["aten::floordiv"] = [](Converter& cx, Node* n) { same_dtype_op(cx, n, "Div", {0, 1}); };
  t["aten::floor_divide"] = [](Converter& cx, Node* n) {  // ONNX's integer Div truncates: the same for sizes (>= 0)
    same_dtype_op(cx, n, "Div", {0, 1});
    if (at::isFloatingType(cx.result_dtype())) cx.set(n->output(0), cx.b.node1("Floor", {cx.val(n->output(0)).name}));
  };
  t["aten::remainder"] = [](Converter& cx, Node* n) {
    same_dtype_op(cx, n, "Mod", {0, 1}, {{"fmod", int64_t{at::isFloatingType(cx.result_dtype()) ? 1 : 0}}});
  };
  t["aten::relu6"] = [](Converter& cx, Node* n) { clip(cx, n, 0.0, 6.0); };
  t["aten::clamp_min"] = [](Converter& cx, Node* n) {
    clip(cx, n, cx.static_double(n->input(1), "min"), std::nullopt);
  };
  t["aten::clamp_max"] = [](Converter& cx, Node* n) {
    clip(cx, n, std::nullopt, cx.static_double(n->input(1), "max"));
  };
  t["aten::gelu"] = gelu;
  t["aten::maximum"] = [](Converter& cx, Node* n) { same_dtype_op(cx, n, "Max", {0, 1}); };
  t["aten::minimum"] = [](Converter& cx, Node* n) { same_dtype_op(cx, n, "Min", {0, 1}); };
  t["aten::eq"] = [](Converter& cx, Node* n) { comparison(cx, n, "Equal", false); };
  t["aten::ne"] = [](Converter& cx, Node* n) { comparison(cx, n, "Equal", true); };
  t["aten::lt"] = [](Converter& cx, Node* n) { comparison(cx, n, "Less", false); };
  t["aten::le"] = [](Converter& cx, Node* n) { comparison(cx, n, "LessOrEqual", false); };
  t["aten::gt"] = [](Converter& cx, Node* n) { comparison(cx, n, "Greater", false); };
  t["aten::ge"] = [](Converter& cx, Node* n) { comparison(cx, n, "GreaterOrEqual", false); };
  t["aten::logical_and"] = [](Converter& cx, Node* n) { logical(cx, n, "And"); };
  t["aten::logical_or"] = [](Converter& cx, Node* n) { logical(cx, n, "Or"); };
  t["aten::logical_not"] = [](Converter& cx, Node* n) { logical(cx, n, "Not"); };
  t["aten::logical_xor"] = [](Converter& cx, Node* n) { logical(cx, n, "Xor"); };
  for (const std::string suffix : {"", "_"}) {
    t["aten::__and__"] = t["aten::bitwise_and" + suffix] = [](Converter& cx, Node* n) { logical(cx, n, "And", true); };
    t["aten::__or__"] = t["aten::bitwise_or" + suffix] = [](Converter& cx, Node* n) { logical(cx, n, "Or", true); };
    t["aten::__xor__"] = t["aten::bitwise_xor" + suffix] = [](Converter& cx, Node* n) { logical(cx, n, "Xor", true); };
    t["aten::bitwise_not" + suffix] = [](Converter& cx, Node* n) { logical(cx, n, "Not", true); };
  }
  t["aten::softmax"] = [](Converter& cx, Node* n) { softmax(cx, n, "Softmax"); };
  t["aten::log_softmax"] = [](Converter& cx, Node* n) { softmax(cx, n, "LogSoftmax"); };
  t["aten::mean"] = [](Converter& cx, Node* n) { reduction(cx, n, "ReduceMean"); };
  t["aten::sum"] = [](Converter& cx, Node* n) { reduction(cx, n, "ReduceSum"); };
  t["aten::amax"] = [](Converter& cx, Node* n) { extremum(cx, n, "ReduceMax"); };
  t["aten::amin"] = [](Converter& cx, Node* n) { extremum(cx, n, "ReduceMin"); };
  t["aten::max"] = [](Converter& cx, Node* n) { max_or_min(cx, n, true); };
  t["aten::min"] = [](Converter& cx, Node* n) { max_or_min(cx, n, false); };
  t["aten::argmax"] = [](Converter& cx, Node* n) { argmax(cx, n, "ArgMax"); };
  t["aten::argmin"] = [](Converter& cx, Node* n) { argmax(cx, n, "ArgMin"); };
  for (const std::string op : {"aten::to", "aten::type_as", "aten::Int", "aten::Float", "aten::Bool", "aten::float",
                               "aten::long", "aten::int", "aten::bool"})
    t[op] = convert_dtype;
  for (const std::string op :
       {"aten::contiguous", "aten::detach", "aten::clone", "aten::dropout", "aten::dropout_", "aten::feature_dropout",
        "aten::alpha_dropout", "aten::ScalarImplicit", "prim::NumToTensor", "aten::lift_fresh", "prim::unchecked_cast"})
    t[op] = pass_through;
}

}  // namespace qforge::onnx_export
