#include "graph/fake_quant_graph.h"

#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>

#include <algorithm>
#include <map>
#include <regex>
#include <set>

#include "graph/fuse_observations.h"
#include "graph/model.h"
#include "graph/rewrite.h"
#include "qforge/errors.h"

namespace qforge {
namespace {

using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;
using torch::jit::WithInsertPoint;

// "layer1.0.conv1" -> "_qforge__layer1_0_conv1__<what>": one attribute per layer on the root.
std::string attribute_name(const std::string& layer, const std::string& what) {
  return "_qforge__" + std::regex_replace(layer, std::regex("[^A-Za-z0-9_]"), "_") + "__" + what;
}

// On the module's device: quantization parameters computed on the host meet
// activations on the GPU. Buffers, so Module.to and map_location move them with
// the model (plain attributes stay where they were made).
Value* add_tensor_attribute(torch::jit::Module& module, Graph& graph, const std::string& name,
                            const at::Tensor& value) {
  module.register_buffer(name, value.to(module_device(module)));
  return graph.insertGetAttr(graph.inputs()[0], name);
}

Value* add_parameter(torch::jit::Module& module, Graph& graph, const std::string& name, const at::Tensor& value) {
  module.register_parameter(name, value, /*is_buffer=*/false);
  return graph.insertGetAttr(graph.inputs()[0], name);
}

// Fake quantization of `x` with scale and zero point `q`, per tensor (axis < 0)
// or along `axis`. With a log-multiplier, through learnable ops (their
// forward is the plain op's, their backward also gives the scale a gradient)
// at scale·exp(multiplier); the zero point stays fixed. Fine-tuning's graphs
// take qforge's ops, which never wait for the device; others ATen's.
Value* insert_fake_quantize(torch::jit::Module& module, Graph& graph, const std::string& layer, const std::string& what,
                            Value* x, const QParams& q, const QuantRange& range, int64_t axis,
                            const at::Tensor& log_multiplier, FakeQuantOps ops) {
  if (!log_multiplier.defined()) {
    Value* scale = add_tensor_attribute(module, graph, attribute_name(layer, what + "_scale"), q.scale);
    Value* zero = add_tensor_attribute(module, graph, attribute_name(layer, what + "_zero_point"), q.zero_point);
    if (axis < 0)
      return graph.insert(c10::Symbol::aten("fake_quantize_per_tensor_affine"),
                          {x, scale, zero, range.qmin, range.qmax});
    const char* op =
        ops == FakeQuantOps::Training ? "qforge::fake_quantize_rows" : "aten::fake_quantize_per_channel_affine";
    return graph.insert(c10::Symbol::fromQualString(op), {x, scale, zero, axis, range.qmin, range.qmax});
  }
  Value* initial = add_tensor_attribute(module, graph, attribute_name(layer, what + "_scale"),
                                        q.scale.detach().reshape({-1}).to(at::kFloat));
  // ATen's learnable ops take float zero points; qforge's, the integers.
  const at::ScalarType zero_type = ops == FakeQuantOps::Training ? at::kInt : at::kFloat;
  Value* zero = add_tensor_attribute(module, graph, attribute_name(layer, what + "_zero_point"),
                                     q.zero_point.detach().reshape({-1}).to(zero_type));
  Value* multiplier = add_parameter(module, graph, attribute_name(layer, what + "_log_multiplier"), log_multiplier);
  Value* scale = graph.insert(c10::aten::mul, {initial, graph.insert(c10::aten::exp, {multiplier})});
  if (ops == FakeQuantOps::Training)
    return graph.insert(c10::Symbol::fromQualString("qforge::fake_quantize_learnable"),
                        {x, scale, zero, axis, range.qmin, range.qmax});
  if (axis < 0)
    return graph.insert(c10::Symbol::aten("_fake_quantize_learnable_per_tensor_affine"),
                        {x, scale, zero, range.qmin, range.qmax, 1.0});
  return graph.insert(c10::Symbol::aten("_fake_quantize_learnable_per_channel_affine"),
                      {x, scale, zero, axis, range.qmin, range.qmax, 1.0});
}

// weight + scale·reshape((B·mask)·A, size(weight)), as adapted_weight computes
// it, in place of `weight` for every later use.
Value* replace_with_adapted(Graph& graph, Value* weight, Value* a, Value* b, double scale) {
  Value* product = graph.insert(c10::aten::matmul, {b, a});
  Value* shape = graph.insert(c10::aten::size, {weight});
  Value* delta = graph.insert(c10::aten::mul, {graph.insert(c10::aten::reshape, {product, shape}), scale});
  Value* adapted = graph.insert(c10::aten::add, {weight, delta});
  weight->replaceAllUsesAfterNodeWith(adapted->node(), adapted);
  return adapted;
}

bool quantizes_anything(const LayerFakeQuant& layer) { return layer.weight || layer.input || layer.output; }

bool only_read_by_linear(Value* weight) {
  const auto& uses = weight->uses();
  return !uses.empty() && std::all_of(uses.begin(), uses.end(), [](const torch::jit::Use& use) {
    return use.user->kind() == c10::aten::linear && use.offset == 1;
  });
}

// Plain LoRA beside a linear layer, as peft computes it: y + scale·((x·Aᵀ)·(B·mask)ᵀ).
// The frozen weight then needs no gradient of its own: forming W + s·B·A
// would cost the backward pass a full [outputs, inputs] product per layer.
void add_beside_linear_layers(Graph& graph, Value* weight, Value* a, Value* b, double scale) {
  const std::vector<torch::jit::Use> uses = weight->uses();  // a copy: the loop adds uses of other values
  for (const auto& use : uses) {
    Node* linear = use.user;
    WithInsertPoint after(linear->next());
    Value* low_rank = graph.insert(c10::aten::linear, {linear->input(0), a});
    Value* delta = graph.insert(c10::aten::mul, {graph.insert(c10::aten::linear, {low_rank, b}), scale});
    Value* y = linear->output();
    Value* adapted = graph.insert(c10::aten::add, {y, delta});
    y->replaceAllUsesAfterNodeWith(adapted->node(), adapted);
  }
}

}  // namespace

std::optional<std::string> attribute_path(const Value* value, const Value* self) {
  if (value == self) return std::string();
  const Node* n = value->node();
  if (n->kind() != c10::prim::GetAttr) return std::nullopt;
  auto parent = attribute_path(n->input(), self);
  if (!parent) return std::nullopt;
  const std::string name = n->s(c10::attr::name);
  return parent->empty() ? name : *parent + "." + name;
}

at::Tensor adapted_weight(const at::Tensor& weight, const LoraAdapter& adapter) {
  const at::Tensor b = adapter.mask.defined() ? adapter.b.mul(adapter.mask) : adapter.b;
  const at::Tensor adapted = weight.add(b.matmul(adapter.a).reshape(weight.sizes()).mul(adapter.scale));
  return adapter.keep.defined() ? adapted.mul(adapter.keep) : adapted;
}

at::Tensor learned_scale(const at::Tensor& scale, const at::Tensor& log_multiplier) {
  return scale.reshape({-1})
      .to(at::kFloat)
      .mul(log_multiplier.to(scale.device()).exp())
      .reshape(scale.sizes())
      .to(scale.scalar_type());
}

std::vector<std::string> layers_read_by(const torch::jit::Module& module, const std::string& method) {
  const Rewrite rewrite(module, method);
  std::vector<std::string> out;
  // A weight that reaches only functional code (F.linear on a weight passed
  // around as a tensor) has no input an observer could see.
  const auto computes_with = [](const Node* read) {
    for (const auto& use : read->output()->uses()) {
      const std::string kind = use.user->kind().toQualString();
      if (consumes_activation(use.user) || kind == "aten::embedding" || kind == "aten::embedding_bag") return true;
    }
    return false;
  };
  for (const auto& [layer, reads] : rewrite.weight_reads)
    if (std::any_of(reads.begin(), reads.end(), computes_with)) out.push_back(layer);
  return out;
}

torch::jit::Module with_observers(const torch::jit::Module& original, const std::string& method,
                                  const std::vector<std::string>& layers) {
  std::vector<ObservedTensor> points;
  for (const auto& l : layers) points.push_back({l, false});
  return with_observers(original, method, points);
}

torch::jit::Module with_observers(const torch::jit::Module& original, const std::string& method,
                                  const std::vector<ObservedTensor>& points, std::vector<int64_t>* served_by,
                                  ObserveFusion fusion) {
  Rewrite rewrite(original, method);
  if (served_by) served_by->assign(points.size(), -1);
  std::map<std::vector<Value*>, int64_t> first_observing;  // a list of tensors, the first point observing it
  std::vector<ObservationSite> all_sites;
  for (size_t point = 0; point < points.size(); ++point) {
    std::vector<ObservationSite> sites;
    for (Node* read : rewrite.reads_of(points[point].layer, method))
      for (Node* user : activation_users(read->output()))
        sites.push_back({points[point].output ? user->output() : user->input(0),
                         points[point].output ? user->next() : user, static_cast<int64_t>(point)});
    if (served_by && !sites.empty()) {
      std::vector<Value*> tensors;
      for (const auto& site : sites) tensors.push_back(site.tensor);
      const auto [first, fresh] = first_observing.emplace(tensors, static_cast<int64_t>(point));
      (*served_by)[point] = first->second;
      if (!fresh) continue;
    }
    all_sites.insert(all_sites.end(), sites.begin(), sites.end());
  }
  insert_observations(rewrite.graph, all_sites, fusion);
  return rewrite.module;
}

std::vector<std::string> layers_feeding_adds(const torch::jit::Module& module, const std::string& method) {
  const Rewrite rewrite(module, method);
  std::vector<std::string> out;
  for (const auto& [layer, reads] : rewrite.weight_reads) {
    bool feeds_add = false;
    for (Node* read : reads)
      for (Node* user : activation_users(read->output()))
        for (const auto& use : user->output()->uses())
          feeds_add = feeds_add || use.user->kind() == c10::aten::add || use.user->kind() == c10::Symbol::aten("add_");
    if (feeds_add) out.push_back(layer);
  }
  return out;
}

torch::jit::Module with_fake_quantization(const torch::jit::Module& original, const std::string& method,
                                          const std::vector<LayerFakeQuant>& layers, FakeQuantOps ops) {
  Rewrite rewrite(original, method);
  torch::jit::Module& module = rewrite.module;
  std::shared_ptr<Graph> graph = rewrite.graph;
  // ATen's fake quantization takes float32 on every device: a bfloat16 or float16
  // model's tensors are rounded in float32 and handed on in their own dtype.
  const bool in_float32 = module_float_dtype(module) != at::kFloat;
  const auto fake_quantize = [&](const std::string& layer, const std::string& what, Value* x, const QParams& q,
                                 const QuantRange& range, int64_t axis, const at::Tensor& log_multiplier) {
    if (!in_float32) return insert_fake_quantize(module, *graph, layer, what, x, q, range, axis, log_multiplier, ops);
    Value* wide = graph->insert(c10::aten::to, {x, static_cast<int64_t>(at::kFloat), false, false});
    Value* y = insert_fake_quantize(module, *graph, layer, what, wide, q, range, axis, log_multiplier, ops);
    return graph->insert(c10::aten::type_as, {y, x});
  };
  for (const auto& layer : layers) {
    if (layer.weight_value.defined()) {
      torch::jit::Module owner = submodule(module, layer.layer, "the model");
      const at::ScalarType held = owner.attr("weight").toTensor().scalar_type();
      owner.setattr("weight", layer.weight_value.to(held));  // solved in float32 or float64
    }
    for (Node* read : rewrite.reads_of(layer.layer, method)) {
      Value* weight = read->output();
      WithInsertPoint after_read(read->next());
      if (layer.lora) {
        Value* a = add_parameter(module, *graph, attribute_name(layer.layer, "lora_A"), layer.lora->a);
        Value* b = add_parameter(module, *graph, attribute_name(layer.layer, "lora_B"), layer.lora->b);
        if (layer.lora->mask.defined())
          b = graph->insert(
              c10::aten::mul,
              {b, add_tensor_attribute(module, *graph, attribute_name(layer.layer, "lora_mask"), layer.lora->mask)});
        if (!quantizes_anything(layer) && !layer.lora->keep.defined() && only_read_by_linear(weight)) {
          add_beside_linear_layers(*graph, weight, a, b, layer.lora->scale);
          continue;
        }
        weight = replace_with_adapted(*graph, weight, a, b, layer.lora->scale);
        if (layer.lora->keep.defined()) {  // a pruned layer: its zeros stay zero
          Value* kept = graph->insert(
              c10::aten::mul, {weight, add_tensor_attribute(module, *graph, attribute_name(layer.layer, "lora_keep"),
                                                            layer.lora->keep)});
          weight->replaceAllUsesAfterNodeWith(kept->node(), kept);
          weight = kept;
        }
      }
      Value* quantized = weight;
      if (layer.weight) {
        const auto& q = *layer.weight;
        Value* rows = weight;
        if (!q.view_shape.empty())  // groups: quantize the [out*groups, group_size] view per row
          rows = graph->insert(c10::aten::reshape, {weight, c10::IValue(q.view_shape)});
        quantized = fake_quantize(layer.layer, "weight", rows, q.qparams, layer.weight_range, q.axis,
                                  layer.weight_log_multiplier);
        if (!q.view_shape.empty()) {
          Value* shape = graph->insert(c10::aten::size, {weight});
          quantized = graph->insert(c10::aten::reshape, {quantized, shape});
        }
        weight->replaceAllUsesAfterNodeWith(quantized->node(), quantized);
      }
      for (Node* user : activation_users(quantized)) {
        if (layer.input) {
          WithInsertPoint before_user(user);
          user->replaceInput(0, fake_quantize(layer.layer, "input", user->input(0), *layer.input, layer.input_range, -1,
                                              layer.input_log_multiplier));
        }
        if (layer.output) {
          WithInsertPoint after_user(user->next());
          Value* y = user->output();
          Value* q = fake_quantize(layer.layer, "output", y, *layer.output, layer.output_range, -1, at::Tensor());
          y->replaceAllUsesAfterNodeWith(q->node(), q);
        }
      }
    }
  }
  torch::jit::EliminateDeadCode(graph);
  return module;
}

namespace {

bool is_convolution(const Node* n) {
  static const std::set<std::string> ops = {"aten::_convolution", "aten::conv1d", "aten::conv2d", "aten::conv3d"};
  return ops.count(n->kind().toQualString()) > 0;
}

// The node computing `v`, looking through a quantizer of it (a layer's output quantizer).
const Node* producer(const Value* v) {
  const Node* n = v->node();
  if (n->kind() == c10::Symbol::aten("fake_quantize_per_tensor_affine")) return n->input(0)->node();
  return n;
}

// The per-tensor quantizer that already quantizes `x` for a layer, when it runs before `node`.
Node* quantizer_of(Value* x, const Node* node) {
  for (const auto& use : x->uses())
    if (use.offset == 0 && use.user->kind() == c10::Symbol::aten("fake_quantize_per_tensor_affine") &&
        use.user->isBefore(node))
      return use.user;
  return nullptr;
}

}  // namespace

int quantize_residual_inputs(torch::jit::Module& module, const std::string& method) {
  const auto graph = torch::jit::toGraphFunction(module.get_method(method).function()).graph();
  std::vector<Node*> adds;
  for (Node* n : graph->nodes())
    if (n->kind() == c10::aten::add || n->kind() == c10::Symbol::aten("add_")) adds.push_back(n);
  int count = 0;
  for (Node* add : adds) {
    for (size_t side = 0; side < 2; ++side) {
      Value* other = add->input(1 - side);
      if (!is_convolution(producer(add->input(side))) || is_convolution(producer(other))) continue;
      Node* quantizer = quantizer_of(other, add);
      if (!quantizer) continue;
      WithInsertPoint before_add(add);
      // Inserted by schema, as every other quantizer of the graph, with the same parameters.
      Value* quantized = graph->insert(quantizer->kind(), {other, quantizer->input(1), quantizer->input(2),
                                                           quantizer->input(3), quantizer->input(4)});
      add->replaceInput(1 - side, quantized);
      ++count;
      break;
    }
  }
  return count;
}

}  // namespace qforge
