// JSON views of a model's layers and signature, shared by `qforge inspect --json` and plan.json.
#pragma once
#include "graph/model.h"
#include "util/json.h"

namespace qforge {

json::object to_json(const LayerInfo& layer);
json::array to_json(const std::vector<MethodArgument>& arguments);
// A layer's quantization scheme as plan.json, quant_params.json and report.json show it.
json::object to_json(const TensorQuantSettings& settings);
json::object to_json(const WeightQuantSettings& settings);  // with the algorithm

}  // namespace qforge
