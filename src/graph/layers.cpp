// Which TorchScript classes are layers qforge quantizes, and why others are not.
#include <map>
#include <optional>
#include <regex>
#include <set>

#include "graph/inline_calls.h"
#include "graph/model.h"
#include "graph/rewrite.h"

namespace qforge {

std::string short_type_name(const std::string& qualified) {
  static const std::regex mangle(R"(___torch_mangle_\d+)");
  std::string name = std::regex_replace(qualified, mangle, "");
  const auto dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

bool is_quantizable_type(const std::string& short_type) {
  static const std::set<std::string> types = {"Linear",          "NonDynamicallyQuantizableLinear",
                                              "Conv1d",          "Conv2d",
                                              "Conv3d",          "ConvTranspose1d",
                                              "ConvTranspose2d", "ConvTranspose3d",
                                              "Embedding",       "EmbeddingBag"};
  return types.count(short_type) > 0;
}

namespace {

// A subclass of a layer type (torchvision's Conv3DSimple is an nn.Conv3d) or
// any module whose forward hands its own weight, as it is, to a convolution or
// linear op: quantized as that layer is. The op it hands it to, if any.
std::optional<c10::Symbol> op_fed_own_weight(const torch::jit::Module& module) {
  const auto forward = module.find_method("forward");
  if (!forward) return std::nullopt;
  const auto graph = torch::jit::toGraphFunction(forward->function()).graph()->copy();
  inline_calls(*graph);  // scripted convolutions call self._conv_forward(input, self.weight, ...)
  for (const torch::jit::Use& use : graph->inputs()[0]->uses()) {
    const torch::jit::Node* read = use.user;
    if (read->kind() != c10::prim::GetAttr || read->s(c10::attr::name) != "weight") continue;
    for (const auto& weight_use : read->output()->uses())
      if (consumes_activation(weight_use.user) && weight_use.offset == 1) return weight_use.user->kind();
  }
  return std::nullopt;
}

// Which memory a weight is: its storage and where in it it starts. The same on
// every device (a tied table moved whole stays one storage), data or none (meta).
using WeightIdentity = std::pair<const void*, int64_t>;

std::optional<WeightIdentity> weight_identity(const c10::IValue& w) {
  if (!w.isTensor() || !w.toTensor().defined() || w.toTensor().numel() == 0 || !w.toTensor().has_storage())
    return std::nullopt;
  const at::Tensor& t = w.toTensor();
  return WeightIdentity{t.storage().unsafeGetStorageImpl(), t.storage_offset()};
}

// Layers whose weight is one tensor (an output layer tied to the embedding):
// each names the first other layer it shares with. `weights[i]`: layer i's
// weight, if it has one.
void mark_shared_weights(const std::vector<std::optional<WeightIdentity>>& weights, std::vector<LayerInfo>& layers) {
  std::map<WeightIdentity, std::vector<size_t>> by_data;
  for (size_t i = 0; i < layers.size(); ++i)
    if (weights[i]) by_data[*weights[i]].push_back(i);
  for (const auto& [data, members] : by_data)
    if (members.size() > 1)
      for (size_t i : members) layers[i].shares_weight_with = layers[members[0] == i ? members[1] : members[0]].name;
}

}  // namespace

std::vector<LayerInfo> Model::layers() const {
  static const std::set<std::string> normalization = {
      "BatchNorm1d",    "BatchNorm2d",    "BatchNorm3d",    "LayerNorm",         "GroupNorm",
      "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "LocalResponseNorm", "RMSNorm"};
  std::vector<LayerInfo> out;
  std::vector<std::optional<WeightIdentity>> weights;
  for (const auto& item : module_.named_modules()) {
    if (item.name.empty()) continue;  // the root module
    LayerInfo layer;
    layer.name = item.name;
    const auto type = item.value.type();
    layer.qualified_type = type->name() ? type->name()->qualifiedName() : "?";
    layer.type = short_type_name(layer.qualified_type);
    for (const auto& p : item.value.named_parameters(/*recurse=*/false)) layer.parameters += p.value.numel();
    if (item.value.hasattr("weight")) {
      const auto w = item.value.attr("weight");
      if (w.isTensor()) layer.weight_shape = w.toTensor().sizes().vec();
      weights.push_back(weight_identity(w));
    } else {
      weights.push_back(std::nullopt);
    }
    layer.has_children = item.value.children().size() > 0;
    const bool linear_type = layer.type == "Linear" || layer.type == "NonDynamicallyQuantizableLinear";
    const auto fed = is_quantizable_type(layer.type) ? std::nullopt : op_fed_own_weight(item.value);
    layer.quantizable = !layer.weight_shape.empty() && (is_quantizable_type(layer.type) || fed);
    layer.linear = layer.weight_shape.size() == 2 && (linear_type || fed == c10::aten::linear);
    if (!layer.quantizable) {
      if (is_quantizable_type(layer.type))
        layer.reason = "has no weight tensor";
      else if (normalization.count(layer.type))
        layer.reason = "normalization: folded or kept in floating point";
      else if (layer.has_children && layer.parameters == 0)
        layer.reason = "container of other layers";
      else if (layer.parameters == 0)
        layer.reason = "no weights";
      else if (layer.type == "MultiheadAttention")  // its out_proj is a Linear of its own
        layer.reason = "the packed query/key/value projection (in_proj_weight) stays in floating point";
      else
        layer.reason = "layer type " + layer.type +
                       " is not quantized (its forward does not hand its weight to a convolution or linear op)";
    }
    out.push_back(std::move(layer));
  }
  mark_shared_weights(weights, out);
  return out;
}

void tie_weights_like(const torch::jit::Module& original, torch::jit::Module& copy) {
  std::map<WeightIdentity, std::string> first;  // a weight -> the first layer holding it
  for (const auto& item : original.named_modules()) {
    if (item.name.empty() || !item.value.hasattr("weight")) continue;
    const auto identity = weight_identity(item.value.attr("weight"));
    if (!identity) continue;
    const auto [owner, inserted] = first.emplace(*identity, item.name);
    if (!inserted)
      submodule(copy, item.name, "the copy")
          .setattr("weight", submodule(copy, owner->second, "the copy").attr("weight"));
  }
}

torch::jit::Module clone_module(const torch::jit::Module& module) {
  torch::jit::Module copy = module.clone();
  tie_weights_like(module, copy);
  return copy;
}

}  // namespace qforge
