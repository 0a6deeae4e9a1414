#include "plan/solve_steps.h"

#include <fnmatch.h>

#include <algorithm>
#include <map>

#include "qforge/errors.h"

namespace qforge {
namespace {

bool inside(const std::string& layer, const std::string& block) {
  return layer == block || layer.rfind(block + ".", 0) == 0;
}

std::string parent_of(const std::string& name) {
  const auto dot = name.rfind('.');
  return dot == std::string::npos ? "" : name.substr(0, dot);
}

size_t layers_inside(const std::vector<std::string>& layers, const std::string& block) {
  return static_cast<size_t>(
      std::count_if(layers.begin(), layers.end(), [&](const std::string& l) { return inside(l, block); }));
}

// The repeated blocks: among containers with at least two children of one
// type that each hold a layer to solve, the one whose blocks hold the most.
std::vector<std::string> repeated_blocks(const std::vector<std::string>& layers,
                                         const std::vector<LayerInfo>& all_layers) {
  std::map<std::pair<std::string, std::string>, std::vector<std::string>> children;  // (parent, type) -> blocks
  for (const auto& l : all_layers)
    if (l.has_children && layers_inside(layers, l.name) > 0) children[{parent_of(l.name), l.type}].push_back(l.name);
  std::vector<std::string> best;
  size_t best_count = 0;
  for (const auto& [key, blocks] : children) {
    if (blocks.size() < 2) continue;
    size_t count = 0;
    for (const auto& b : blocks) count += layers_inside(layers, b);
    if (count > best_count) {
      best = blocks;
      best_count = count;
    }
  }
  return best;
}

std::vector<std::string> named_blocks(const std::string& glob, const std::vector<LayerInfo>& all_layers,
                                      const std::string& algorithm) {
  std::vector<std::string> blocks;
  for (const auto& l : all_layers)
    if (fnmatch(glob.c_str(), l.name.c_str(), 0) == 0) blocks.push_back(l.name);
  if (blocks.empty())
    throw ConfigError((algorithm == "pruning" ? std::string("pruning_settings")
                                              : "quantization_settings.weights." + algorithm) +
                      ".blocks: '" + glob +
                      "' names no layer of the model (qforge inspect lists them); use auto, none, or a glob such as "
                      "'layers.*'");
  return blocks;
}

}  // namespace

SolveSteps plan_solve_steps(const std::vector<std::string>& layers, const std::vector<LayerInfo>& all_layers,
                            const std::string& blocks, const std::string& algorithm) {
  SolveSteps out;
  if (layers.empty()) return out;
  std::vector<std::string> block_names;
  if (blocks == "auto")
    block_names = repeated_blocks(layers, all_layers);
  else if (blocks != "none")
    block_names = named_blocks(blocks, all_layers, algorithm);
  if (block_names.empty()) {
    out.steps.push_back({"", layers});
    if (blocks == "auto")
      out.note = algorithm +
                 ": the model has no repeated blocks (a container of two or more children of one type); "
                 "every layer is processed in one step, on the float model's inputs";
    return out;
  }
  for (const auto& layer : layers) {
    const auto block =
        std::find_if(block_names.begin(), block_names.end(), [&](const std::string& b) { return inside(layer, b); });
    const std::string name = block == block_names.end() ? "" : *block;
    if (out.steps.empty() || out.steps.back().block != name) out.steps.push_back({name, {}});
    out.steps.back().layers.push_back(layer);
  }
  return out;
}

}  // namespace qforge
