// Normalizations: batch norm (eval), layer norm, group norm, instance norm.
#include <ATen/ATen.h>

#include "export/onnx_ops.h"

namespace qforge::onnx_export {
namespace {

// A norm's weight or bias, or `fill` of `shape` where the module has none.
std::string parameter_or(Converter& cx, const Value* v, const std::vector<int64_t>& shape, double fill,
                         at::ScalarType dt) {
  if (!cx.is_none(v)) return cx.tensor(v, dt);
  return cx.constant(at::full(shape, fill, at::TensorOptions().dtype(dt)));
}

// batch_norm(x, weight, bias, mean, var, training, momentum, eps, cudnn)
void batch_norm(Converter& cx, const Node* n) {
  if (cx.example(n->input(5)).toBool()) cx.fail(n, "batch norm in training mode (call eval() before saving)");
  const at::ScalarType dt = cx.result_dtype();
  const int64_t channels = cx.example(n->input(3)).toTensor().numel();
  const std::vector<std::string> inputs = {
      cx.tensor(n->input(0), dt), parameter_or(cx, n->input(1), {channels}, 1.0, dt),
      parameter_or(cx, n->input(2), {channels}, 0.0, dt), cx.tensor(n->input(3), dt), cx.tensor(n->input(4), dt)};
  cx.set(n->output(0),
         cx.b.node1("BatchNormalization", inputs, {{"epsilon", cx.static_double(n->input(7), "eps")}}, cx.stem(n)));
}

// layer_norm(x, normalized_shape, weight, bias, eps, cudnn)
void layer_norm(Converter& cx, const Node* n) {
  if (cx.options.opset < 17) cx.fail(n, "LayerNormalization needs opset 17 or later");
  const at::ScalarType dt = cx.result_dtype();
  const auto shape = cx.static_ints(n->input(1), "normalized_shape");
  const int64_t axis = cx.rank(n->input(0)) - static_cast<int64_t>(shape.size());
  const std::vector<std::string> inputs = {cx.tensor(n->input(0), dt), parameter_or(cx, n->input(2), shape, 1.0, dt),
                                           parameter_or(cx, n->input(3), shape, 0.0, dt)};
  cx.set(n->output(0), cx.b.node1("LayerNormalization", inputs,
                                  {{"axis", axis}, {"epsilon", cx.static_double(n->input(4), "eps")}}, cx.stem(n)));
}

// group_norm(x, num_groups, weight, bias, eps, cudnn): each sample's channels
// in `num_groups` groups normalized over the group and the spatial dims, then
// scaled per channel. As InstanceNormalization over x seen as [N, G, -1] (one
// "channel" a group), reshaped back; the affine per channel after it (opset
// 18's GroupNormalization scales per group, 21's per channel: neither is used).
void group_norm(Converter& cx, const Node* n) {
  const at::ScalarType dt = cx.result_dtype();
  const int64_t groups = cx.static_int(n->input(1), "num_groups");
  const at::Tensor example = cx.example(n->input(0)).toTensor();
  const int64_t rank = example.dim(), channels = example.size(1);
  const std::string x = cx.tensor(n->input(0), dt);
  auto& b = cx.b;
  const std::string grouped = b.node1("Reshape", {x, b.int64s({0, groups, -1})});
  const std::string ones = cx.constant(at::ones({groups}, at::TensorOptions().dtype(dt)));
  const std::string zeros = cx.constant(at::zeros({groups}, at::TensorOptions().dtype(dt)));
  const std::string normalized =
      b.node1("InstanceNormalization", {grouped, ones, zeros}, {{"epsilon", cx.static_double(n->input(4), "eps")}});
  std::string y = b.node1("Reshape", {normalized, cx.shape_of(x)}, {}, cx.stem(n));
  std::vector<int64_t> per_channel(static_cast<size_t>(rank - 1), 1);
  per_channel[0] = channels;
  if (!cx.is_none(n->input(2)))
    y = b.node1("Mul", {y, b.node1("Reshape", {cx.tensor(n->input(2), dt), b.int64s(per_channel)})});
  if (!cx.is_none(n->input(3)))
    y = b.node1("Add", {y, b.node1("Reshape", {cx.tensor(n->input(3), dt), b.int64s(per_channel)})});
  cx.set(n->output(0), y);
}

// instance_norm(x, weight, bias, running_mean, running_var, use_input_stats, momentum, eps, cudnn):
// InstanceNormalization with the input's own statistics; with the running
// ones (track_running_stats in eval), the batch-norm formula per channel.
void instance_norm(Converter& cx, const Node* n) {
  const at::ScalarType dt = cx.result_dtype();
  const int64_t channels = cx.example(n->input(0)).toTensor().size(1);
  const double eps = cx.static_double(n->input(7), "eps");
  const std::string weight = parameter_or(cx, n->input(1), {channels}, 1.0, dt);
  const std::string bias = parameter_or(cx, n->input(2), {channels}, 0.0, dt);
  if (cx.example(n->input(5)).toBool())
    return cx.set(n->output(0), cx.b.node1("InstanceNormalization", {cx.tensor(n->input(0), dt), weight, bias},
                                           {{"epsilon", eps}}, cx.stem(n)));
  cx.set(n->output(0),
         cx.b.node1("BatchNormalization",
                    {cx.tensor(n->input(0), dt), weight, bias, cx.tensor(n->input(3), dt), cx.tensor(n->input(4), dt)},
                    {{"epsilon", eps}}, cx.stem(n)));
}

}  // namespace

void add_norm_ops(std::map<std::string, OpHandler>& t) {
  t["aten::batch_norm"] = batch_norm;
  t["aten::layer_norm"] = layer_norm;
  t["aten::group_norm"] = group_norm;
  t["aten::instance_norm"] = instance_norm;
}

}  // namespace qforge::onnx_export
