// Layers: convolutions, linear and matrix products, pooling, normalization, embedding.
#include <ATen/ATen.h>

#include "export/onnx_ops.h"

namespace qforge::onnx_export {
namespace {

std::vector<int64_t> repeated(std::vector<int64_t> values, size_t n) {
  if (values.size() == 1 && n > 1) values.assign(n, values[0]);
  return values;
}

std::vector<int64_t> symmetric_pads(const std::vector<int64_t>& padding) {
  std::vector<int64_t> pads = padding;
  pads.insert(pads.end(), padding.begin(), padding.end());
  return pads;
}

struct ConvArgs {
  std::vector<int64_t> stride, padding, dilation, output_padding;
  std::string auto_pad;  // "same" / "valid" from conv2d(padding: str)
  bool transposed = false;
  int64_t groups = 1;
};

void emit_conv(Converter& cx, const Node* n, const ConvArgs& a) {
  const size_t spatial = cx.rank(n->input(0)) - 2;
  const std::string op = a.transposed ? "ConvTranspose" : "Conv";
  std::vector<std::string> inputs = {cx.tensor(n->input(0)), cx.weight(n->input(1), false, op)};
  if (!cx.is_none(n->input(2))) inputs.push_back(cx.tensor(n->input(2)));
  Attributes attributes = {
      {"strides", repeated(a.stride, spatial)}, {"dilations", repeated(a.dilation, spatial)}, {"group", a.groups}};
  const at::Tensor w = cx.example(n->input(1)).toTensor();
  std::vector<int64_t> kernel(w.sizes().begin() + 2, w.sizes().end());
  attributes.push_back({"kernel_shape", kernel});
  if (a.auto_pad == "same") {
    attributes.push_back({"auto_pad", std::string("SAME_UPPER")});
  } else if (a.auto_pad != "valid") {
    attributes.push_back({"pads", symmetric_pads(repeated(a.padding, spatial))});
  }
  if (a.transposed && !a.output_padding.empty())
    attributes.push_back({"output_padding", repeated(a.output_padding, spatial)});
  cx.set(n->output(0), cx.b.node1(op, inputs, attributes, cx.stem(n)));
}

// _convolution(x, w, b, stride, padding, dilation, transposed, output_padding, groups, ...)
void convolution(Converter& cx, const Node* n) {
  ConvArgs a;
  a.stride = cx.static_ints(n->input(3), "stride");
  a.padding = cx.static_ints(n->input(4), "padding");
  a.dilation = cx.static_ints(n->input(5), "dilation");
  a.transposed = cx.example(n->input(6)).toBool();
  a.output_padding = cx.static_ints(n->input(7), "output_padding");
  a.groups = cx.static_int(n->input(8), "groups");
  emit_conv(cx, n, a);
}

// conv1d/2d/3d(x, w, b, stride, padding, dilation, groups), padding ints or "same"/"valid"
void conv(Converter& cx, const Node* n) {
  ConvArgs a;
  a.stride = cx.static_ints(n->input(3), "stride");
  if (cx.example(n->input(4)).isString())
    a.auto_pad = cx.example(n->input(4)).toStringRef();
  else
    a.padding = cx.static_ints(n->input(4), "padding");
  a.dilation = cx.static_ints(n->input(5), "dilation");
  a.groups = cx.static_int(n->input(6), "groups");
  emit_conv(cx, n, a);
}

// conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation)
void conv_transpose(Converter& cx, const Node* n) {
  ConvArgs a;
  a.transposed = true;
  a.stride = cx.static_ints(n->input(3), "stride");
  a.padding = cx.static_ints(n->input(4), "padding");
  a.output_padding = cx.static_ints(n->input(5), "output_padding");
  a.groups = cx.static_int(n->input(6), "groups");
  a.dilation = cx.static_ints(n->input(7), "dilation");
  emit_conv(cx, n, a);
}

// linear(x, W, b): MatMul with W stored transposed ([in, out]), then the bias.
// The int8 (or blocked int4) weight sits right before MatMul's second input,
// where TensorRT and onnxruntime's QDQ fusions look for it.
void linear(Converter& cx, const Node* n) {
  const at::ScalarType dt = cx.result_dtype();
  std::string y =
      cx.b.node1("MatMul", {cx.tensor(n->input(0), dt), cx.weight(n->input(1), true, "MatMul")}, {}, cx.stem(n));
  if (!cx.is_none(n->input(2))) y = cx.b.node1("Add", {y, cx.tensor(n->input(2), dt)}, {}, cx.stem(n));
  cx.set(n->output(0), y);
}

void matmul(Converter& cx, const Node* n) { same_dtype_op(cx, n, "MatMul", {0, 1}); }

// addmm(bias, a, b, beta, alpha) / baddbmm: beta·bias + alpha·(a @ b)
void add_matmul(Converter& cx, const Node* n) {
  const at::ScalarType dt = cx.result_dtype();
  std::string product = cx.b.node1("MatMul", {cx.tensor(n->input(1), dt), cx.tensor(n->input(2), dt)}, {}, cx.stem(n));
  const double beta = cx.static_double(n->input(3), "beta"), alpha = cx.static_double(n->input(4), "alpha");
  if (alpha != 1.0) product = cx.b.node1("Mul", {product, cx.scalar_float(alpha, dt)});
  std::string bias = cx.tensor(n->input(0), dt);
  if (beta != 1.0) bias = cx.b.node1("Mul", {bias, cx.scalar_float(beta, dt)});
  cx.set(n->output(0), cx.b.node1("Add", {bias, product}, {}, cx.stem(n)));
}

// max_pool(x, kernel, stride, padding, dilation, ceil_mode)
void max_pool(Converter& cx, const Node* n) {
  const size_t spatial = cx.rank(n->input(0)) - 2;
  const auto kernel = repeated(cx.static_ints(n->input(1), "kernel_size"), spatial);
  auto stride = cx.static_ints(n->input(2), "stride");
  if (stride.empty()) stride = kernel;
  Attributes attributes = {{"kernel_shape", kernel},
                           {"strides", repeated(stride, spatial)},
                           {"pads", symmetric_pads(repeated(cx.static_ints(n->input(3), "padding"), spatial))},
                           {"dilations", repeated(cx.static_ints(n->input(4), "dilation"), spatial)},
                           {"ceil_mode", int64_t{cx.example(n->input(5)).toBool()}}};
  cx.set(n->output(0), cx.b.node("MaxPool", {cx.tensor(n->input(0))}, 1, attributes, cx.stem(n))[0]);
}

// avg_pool(x, kernel, stride, padding, ceil_mode, count_include_pad[, divisor_override])
void avg_pool(Converter& cx, const Node* n) {
  const size_t spatial = cx.rank(n->input(0)) - 2;
  const auto kernel = repeated(cx.static_ints(n->input(1), "kernel_size"), spatial);
  auto stride = cx.static_ints(n->input(2), "stride");
  if (stride.empty()) stride = kernel;
  if (n->inputs().size() > 6 && !cx.is_none(n->input(6))) cx.fail(n, "divisor_override has no ONNX form");
  Attributes attributes = {{"kernel_shape", kernel},
                           {"strides", repeated(stride, spatial)},
                           {"pads", symmetric_pads(repeated(cx.static_ints(n->input(3), "padding"), spatial))},
                           {"ceil_mode", int64_t{cx.example(n->input(4)).toBool()}},
                           {"count_include_pad", int64_t{cx.example(n->input(5)).toBool()}}};
  cx.set(n->output(0), cx.b.node1("AveragePool", {cx.tensor(n->input(0))}, attributes, cx.stem(n)));
}

// Adaptive average pooling of one axis from `size` to `out` as a matrix
// [size, out]: output i averages inputs floor(i·size/out) to
// ceil((i+1)·size/out), PyTorch's windows, which may differ in size.
at::Tensor averaging_matrix(int64_t size, int64_t out) {
  at::Tensor m = at::zeros({size, out}, at::kFloat);
  for (int64_t i = 0; i < out; ++i) {
    const int64_t begin = i * size / out, end = ((i + 1) * size + out - 1) / out;
    m.narrow(1, i, 1).narrow(0, begin, end - begin).fill_(1.0 / static_cast<double>(end - begin));
  }
  return m;
}

// Adaptive average pooling whose windows differ in size (7 outputs from 10,
// or 6 from 1): a MatMul per spatial axis, that axis moved last and back.
std::string averaged_by_matrices(Converter& cx, const Node* n, std::string x, const at::Tensor& example,
                                 const std::vector<int64_t>& out) {
  const int64_t rank = example.dim();
  for (int64_t d = rank - 1; d >= 2; --d) {
    const int64_t size = example.size(d), target = out[static_cast<size_t>(d - 2)];
    if (size == target) continue;
    std::vector<int64_t> swap(static_cast<size_t>(rank));
    for (int64_t k = 0; k < rank; ++k) swap[static_cast<size_t>(k)] = k;
    std::swap(swap[static_cast<size_t>(d)], swap.back());
    const bool last = d == rank - 1;
    if (!last) x = cx.b.node1("Transpose", {x}, {{"perm", swap}});
    x = cx.b.node1("MatMul", {x, cx.constant(averaging_matrix(size, target).to(example.scalar_type()), "pool")}, {},
                   cx.stem(n));
    if (!last) x = cx.b.node1("Transpose", {x}, {{"perm", swap}});
  }
  return x;
}

// adaptive pooling: global pooling for output size 1; otherwise a fixed window
// when the example's spatial sizes are multiples of the output size, and for
// average pooling averaging matrices when they are not.
void adaptive_pool(Converter& cx, const Node* n, bool is_max) {
  const at::Tensor x = cx.example(n->input(0)).toTensor();
  const size_t spatial = x.dim() - 2;
  const auto out = repeated(cx.static_ints(n->input(1), "output_size"), spatial);
  const std::string input = cx.tensor(n->input(0));
  if (std::all_of(out.begin(), out.end(), [](int64_t s) { return s == 1; })) {
    cx.set(n->output(0), cx.b.node1(is_max ? "GlobalMaxPool" : "GlobalAveragePool", {input}, {}, cx.stem(n)));
    return;
  }
  std::vector<int64_t> kernel;
  for (size_t d = 0; d < spatial; ++d) {
    const int64_t size = x.size(2 + d);
    if (size % out[d] == 0) {
      kernel.push_back(size / out[d]);
      continue;
    }
    if (is_max)
      cx.fail(n, "adaptive max pooling from " + std::to_string(size) + " to " + std::to_string(out[d]) +
                     " needs windows of different sizes, which ONNX pooling cannot express (inputs whose size is a "
                     "multiple of the output size can)");
    if (cx.options.dynamic)
      cx.notes.push_back("adaptive average pooling to " + c10::str(out) + " averages over fixed windows of a " +
                         c10::str(x.sizes().slice(2)) + " input: the file takes only inputs of that spatial size");
    return cx.set(n->output(0), averaged_by_matrices(cx, n, input, x, out));
  }
  if (cx.options.dynamic)
    cx.notes.push_back("adaptive pooling to " + c10::str(out) + " uses a fixed window of " + c10::str(kernel) +
                       ": inputs of other spatial sizes give other output sizes than PyTorch");
  cx.set(n->output(0), cx.b.node1(is_max ? "MaxPool" : "AveragePool", {input},
                                  {{"kernel_shape", kernel}, {"strides", kernel}}, cx.stem(n)));
}

// embedding(weight, indices, ...): Gather rows of the table.
void embedding(Converter& cx, const Node* n) {
  const std::string table = cx.weight(n->input(0), false, "Gather");
  cx.set(n->output(0),
         cx.b.node1("Gather", {table, cx.tensor(n->input(1), at::kLong)}, {{"axis", int64_t{0}}}, cx.stem(n)));
}

}  // namespace

void add_nn_ops(std::map<std::string, OpHandler>& t) {
  t["aten::_convolution"] = convolution;
  t["aten::conv1d"] = conv;
  t["aten::conv2d"] = conv;
  t["aten::conv3d"] = conv;
  t["aten::conv_transpose1d"] = conv_transpose;
  t["aten::conv_transpose2d"] = conv_transpose;
  t["aten::conv_transpose3d"] = conv_transpose;
  t["aten::linear"] = linear;
  t["aten::matmul"] = matmul;
  t["aten::mm"] = matmul;
  t["aten::bmm"] = matmul;
  t["aten::addmm"] = add_matmul;
  t["aten::baddbmm"] = add_matmul;
  t["aten::max_pool1d"] = max_pool;
  t["aten::max_pool2d"] = max_pool;
  t["aten::max_pool3d"] = max_pool;
  t["aten::avg_pool1d"] = avg_pool;
  t["aten::avg_pool2d"] = avg_pool;
  t["aten::avg_pool3d"] = avg_pool;
  t["aten::adaptive_avg_pool1d"] = [](Converter& cx, Node* n) { adaptive_pool(cx, n, false); };
  t["aten::adaptive_avg_pool2d"] = t["aten::adaptive_avg_pool1d"];
  t["aten::adaptive_avg_pool3d"] = t["aten::adaptive_avg_pool1d"];
  t["aten::adaptive_max_pool2d"] = [](Converter& cx, Node* n) { adaptive_pool(cx, n, true); };
  t["aten::embedding"] = embedding;
}

}  // namespace qforge::onnx_export
