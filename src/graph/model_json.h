// JSON views of a model's layers and signature, shared by `qforge inspect --json` and plan.json.
#pragma once
#include "qforge/model.h"
#include "util/json.h"

namespace qforge {

json::object to_json(const LayerInfo& layer);
json::array to_json(const std::vector<MethodArgument>& arguments);

}  // namespace qforge
