// The plan of a compile: what happens to each layer and why, which rows each
// rank reads, the dynamic axes and a memory estimate. A dry run computes it on
// every rank (validating config, data and model there) and rank 0 writes it.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "qforge/config.h"
#include "qforge/dynamic_axes.h"
#include "qforge/model.h"
#include "qforge/sample_reader.h"

namespace qforge {

struct LayerPlan {
  LayerInfo layer;
  bool quantize = false;
  std::string reason;                // why it is skipped (empty when quantized)
  bool kept_by_choice = false;       // skipped because the experiment says so, not because a setting cannot apply
  bool tied = false;                 // computes with layer.shares_weight_with's weight, quantized there
  std::vector<std::string> matched;  // layer_quantization_settings keys that apply, in order
  TensorQuantSettings weights;       // effective settings, overrides applied
  TensorQuantSettings activations;
};

// True when `name` or one of its parents ("layer4" for "layer4.0.conv1")
// matches the glob `pattern` (fnmatch; '*' also crosses dots).
bool layer_matches(const std::string& pattern, const std::string& name);

// One LayerPlan per quantizable layer, overrides applied from the least to the
// most specific key (globs by length, exact names last). A key that matches no
// layer is a ConfigError listing the closest layer names.
std::vector<LayerPlan> plan_layers(const std::vector<LayerInfo>& layers, const ExperimentConfig& config);

// How one batch is fed to the model (the seed's forward_fn): receives the
// module to run (the model or a rewritten copy) and the batch.
using ForwardFn = std::function<c10::IValue(torch::jit::Module& module, const Batch& batch)>;

// Callbacks of the C++ API (the seed's data_transform_fn and forward_fn).
struct CompileCallbacks {
  DataTransformFn data_transform;  // when set, replaces the YAML data_transform list
  ForwardFn forward;               // when set, replaces binding the data to the method's arguments
};

struct RankShard {
  int rank = 0;
  std::string host;
  RowRange rows;
  int64_t batches = 0;
  int64_t peak_rss_bytes = 0;  // measured after reading the shard and running one batch per group
};

struct Plan {
  std::string graph_name;
  MethodSignature signature;
  int64_t parameters = 0;
  int64_t parameter_bytes = 0;
  std::vector<LayerPlan> layers;
  std::vector<LayerInfo> all_layers;
  DatasetInfo data;
  std::vector<RankShard> shards;
  std::vector<InputAxes> axes;
  int64_t estimated_bytes_per_rank = 0;
  std::string resolved_config;  // the experiment as resolved (YAML), recorded in plan.json
  std::string to_text() const;
  std::string to_json() const;
};

// The dry run: validates config, data (every row of this rank's shard) and
// model (one batch per shape group, and every tracing sample) on every rank;
// rank 0 prints the plan and writes <out_dir>/plan.json. Collective: call on
// every rank. Returns the plan (complete on rank 0).
// It runs the compile's first stage (load, bind, fold, plan), so a dry run that
// passes means the compile's first stage passes; layers the data never runs are
// found here (one batch per shape group with the calibration observers in place).
// `input`: a module in memory (C++ API), as compile() takes it.
Plan dry_run(const ExperimentConfig& config, const CompileCallbacks& callbacks = {},
             torch::jit::Module* input = nullptr);

}  // namespace qforge
