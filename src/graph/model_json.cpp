#include "graph/model_json.h"

namespace qforge {

json::object to_json(const LayerInfo& layer) {
  json::object o;
  o["name"] = layer.name;
  o["type"] = layer.type;
  o["parameters"] = layer.parameters;
  o["weight_shape"] = json::array(layer.weight_shape.begin(), layer.weight_shape.end());
  o["quantizable"] = layer.quantizable;
  if (!layer.quantizable) o["reason"] = layer.reason;
  return o;
}

json::array to_json(const std::vector<MethodArgument>& arguments) {
  json::array out;
  for (const auto& a : arguments) {
    json::object o;
    o["name"] = a.name;
    o["type"] = a.type;
    o["has_default"] = a.has_default;
    out.push_back(o);
  }
  return out;
}

}  // namespace qforge
