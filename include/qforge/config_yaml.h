// Reading and writing the YAML experiment. Relative paths in it are taken
// relative to the working directory of the run, as on the command line.
#pragma once
#include <string>
#include <vector>

#include "qforge/config.h"

namespace qforge {

// Loads `path`, applies `--set key=value` overrides (dotted keys; a key that
// itself holds dots is written in brackets: layer_quantization_settings[layer4.*].skip),
// fills and validates the struct. Unknown keys name the nearest valid key; wrong
// types name the full key path and the line.
ExperimentConfig load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// Same, from YAML text (`source` names it in messages).
ExperimentConfig parse_config(const std::string& yaml_text, const std::string& source,
                              const std::vector<std::string>& overrides = {});

// Task `index` of the experiment's sweep: the sweep's index-th overrides
// applied after `overrides`, writing to <out_dir>/sweep-<index> (and its logs
// under it) unless those overrides choose out_dir themselves. ConfigError
// when there is no such task.
ExperimentConfig load_sweep_task(const std::string& path, const std::vector<std::string>& overrides, int64_t index);

// The resolved config, every key with its value (defaults included), as YAML.
std::string config_to_yaml(const ExperimentConfig& config);

// One documented key of the schema: "quantization_settings.weights.bits".
struct ConfigKeyDoc {
  std::string key;
  std::string default_value;
  std::string doc;
};
std::vector<ConfigKeyDoc> config_key_reference();

// The schema as JSON text (`qforge config schema`): every section and key with its
// type, default, choices and meaning. The Python package makes its settings classes
// from it, so a key added to the schema reaches Python without a second list.
std::string config_schema_json();

// Levenshtein distance: the basis of "did you mean" suggestions.
size_t edit_distance(const std::string& a, const std::string& b);
// The candidates closest to `word`, best first (at most `count`).
std::vector<std::string> nearest_names(const std::string& word, const std::vector<std::string>& candidates,
                                       size_t count = 3);

}  // namespace qforge
