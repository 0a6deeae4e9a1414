// Which TorchScript classes are layers qforge quantizes, and why others are not.
#include <regex>
#include <set>

#include "qforge/model.h"

namespace qforge {

std::string short_type_name(const std::string& qualified) {
  static const std::regex mangle(R"(___torch_mangle_\d+)");
  std::string name = std::regex_replace(qualified, mangle, "");
  const auto dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

bool is_quantizable_type(const std::string& short_type) {
  static const std::set<std::string> types = {
      "Linear", "NonDynamicallyQuantizableLinear", "Conv1d", "Conv2d", "Conv3d",
      "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Embedding", "EmbeddingBag"};
  return types.count(short_type) > 0;
}

std::vector<LayerInfo> Model::layers() const {
  static const std::set<std::string> normalization = {
      "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm", "InstanceNorm1d",
      "InstanceNorm2d", "InstanceNorm3d", "LocalResponseNorm", "RMSNorm"};
  std::vector<LayerInfo> out;
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
    }
    layer.has_children = item.value.children().size() > 0;
    layer.quantizable = is_quantizable_type(layer.type) && !layer.weight_shape.empty();
    if (!layer.quantizable) {
      if (is_quantizable_type(layer.type)) layer.reason = "has no weight tensor";
      else if (normalization.count(layer.type)) layer.reason = "normalization: folded or kept in floating point";
      else if (layer.has_children && layer.parameters == 0) layer.reason = "container of other layers";
      else if (layer.parameters == 0) layer.reason = "no weights";
      else layer.reason = "layer type " + layer.type + " is not quantized";
    }
    out.push_back(std::move(layer));
  }
  return out;
}

}  // namespace qforge
