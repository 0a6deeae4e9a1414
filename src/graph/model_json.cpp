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

json::object to_json(const TensorQuantSettings& s) {
  json::object o;
  o["enabled"] = s.enabled;
  o["bits"] = s.bits;
  o["granularity"] = to_string(s.granularity);
  if (s.granularity == Granularity::Group) o["group_size"] = s.group_size;
  o["symmetric"] = s.symmetric;
  o["signed"] = s.is_signed;
  o["observer"] = to_string(s.observer);
  return o;
}

json::object to_json(const WeightQuantSettings& s) {
  json::object o = to_json(static_cast<const TensorQuantSettings&>(s));
  o["algorithm"] = to_string(s.algorithm);
  if (s.algorithm == WeightAlgorithm::Gptq)
    o["gptq"] = json::object{{"dampening", s.gptq.dampening},
                             {"act_order", s.gptq.act_order},
                             {"block_size", s.gptq.block_size},
                             {"blocks", s.gptq.blocks},
                             {"offload", to_string(s.gptq.offload)}};
  if (s.algorithm == WeightAlgorithm::Awq) o["awq"] = json::object{{"grid", s.awq.grid}, {"blocks", s.awq.blocks}};
  return o;
}

}  // namespace qforge
