// YAML <-> ExperimentConfig, driven by the one schema in schema.h.
#include "qforge/config_yaml.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <type_traits>

#include "config/schema.h"
#include "config/schema_traits.h"
#include "qforge/deployment.h"
#include "qforge/errors.h"

namespace qforge {
namespace {

std::string join_path(const std::string& parent, const std::string& key) {
  return parent.empty() ? key : parent + "." + key;
}

// The experiment file and the --set assignments applied to it, by the key
// path each sets ("a.b.c"; a bracketed name is one more part).
struct Source {
  std::string file;
  std::map<std::string, std::string> assignments;
};

std::string dotted(const std::string& path) {  // "a[b.c].d" -> "a.b.c.d"
  std::string out;
  for (const char ch : path)
    if (ch == '[')
      out += '.';
    else if (ch != ']')
      out += ch;
  return out;
}

// Where a value came from: its --set assignment, or its line in the file.
std::string where(const YAML::Node& node, const std::string& path, const Source& source) {
  const std::string key = dotted(path);
  for (const auto& [set_key, assignment] : source.assignments)
    if (key == set_key || key.rfind(set_key + ".", 0) == 0) return " (--set " + assignment + ")";
  const auto mark = node.Mark();
  return mark.line >= 0 ? " (line " + std::to_string(mark.line + 1) + ")" : "";
}

// A mapping's key as text; a key that is itself a list or a mapping
// (`{[a, b]: 1}`, `? {x: 1}`) is a ConfigError naming where it is.
std::string key_text(const YAML::Node& key, const std::string& path, const std::string& file) {
  if (key.IsScalar()) return key.Scalar();
  const auto mark = key.Mark();
  throw ConfigError(file + ": " + (path.empty() ? std::string("top level") : path) +
                    (mark.line >= 0 ? " (line " + std::to_string(mark.line + 1) + ")" : "") +
                    ": a key must be a plain name, got " +
                    (key.IsSequence() ? "a list"
                     : key.IsMap()    ? "a mapping"
                                      : "nothing"));
}

// ---- Reader ----------------------------------------------------------------

class Reader {
 public:
  Reader(const Source& source, const YAML::Node& node, std::string path)
      : source_(source), node_(node), path_(std::move(path)) {}

  template <class T>
  void operator()(const char* key, T& value, const char* /*doc*/) {
    known_.emplace_back(key);
    const YAML::Node child = node_[key];
    if (!child.IsDefined()) return;
    read(child, value, join_path(path_, key));
  }

  // Every key of this map must be one the schema described.
  void finish() const {
    for (const auto& entry : node_) {
      const auto key = key_text(entry.first, path_, source_.file);
      if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
      const auto near = nearest_names(key, known_, 1);
      std::string valid;
      for (const auto& k : known_) valid += (valid.empty() ? "" : ", ") + k;
      throw ConfigError(source_.file + ": unknown key '" + join_path(path_, key) + "'" +
                        where(entry.first, join_path(path_, key), source_) +
                        (near.empty() ? "" : "; did you mean '" + join_path(path_, near[0]) + "'?") +
                        " Valid keys here: " + valid);
    }
  }

  template <class T>
  void read(const YAML::Node& node, T& value, const std::string& path) {
    if constexpr (is_optional<T>::value) {
      if (node.IsNull()) {
        value.reset();
        return;
      }
      if (!value) value.emplace();
      read(node, *value, path);
    } else if constexpr (is_scalar_v<T>) {
      read_scalar(node, value, path);
    } else if constexpr (is_vector<T>::value) {
      value.clear();
      if (node.IsNull()) return;
      if (node.IsScalar() && is_scalar_v<typename T::value_type>) {  // "files: a.h5" means [a.h5]
        value.emplace_back();
        read(node, value.back(), path);
        return;
      }
      if (!node.IsSequence()) fail(node, path, "a list");
      for (size_t i = 0; i < node.size(); ++i) {
        value.emplace_back();
        read(node[i], value.back(), path + "[" + std::to_string(i) + "]");
      }
    } else if constexpr (is_map<T>::value) {
      value.clear();
      if (node.IsNull()) return;
      if (!node.IsMap()) fail(node, path, "a mapping");
      for (const auto& entry : node) {
        const auto key = key_text(entry.first, path, source_.file);
        read(entry.second, value[key], path + "[" + key + "]");
      }
    } else {  // a section described in schema.h
      if (node.IsNull()) return;
      if (!node.IsMap()) fail(node, path, "a mapping");
      Reader section(source_, node, path);
      schema::describe(section, value);
      section.finish();
    }
  }

 private:
  template <class T>
  void read_scalar(const YAML::Node& node, T& value, const std::string& path) {
    if (!node.IsScalar()) fail(node, path, expected_name<T>());
    const std::string text = node.Scalar();
    try {
      if constexpr (std::is_enum_v<T>) {
        value = enum_from_string<T>(text, source_.file + ": " + path + where(node, path, source_));
      } else if constexpr (std::is_same_v<T, std::string>) {
        value = text;
      } else {
        value = node.as<T>();
      }
    } catch (const YAML::BadConversion&) {
      fail(node, path, expected_name<T>());
    }
  }

  template <class T>
  static const char* expected_name() {
    if constexpr (std::is_same_v<T, bool>)
      return "true or false";
    else if constexpr (std::is_same_v<T, int64_t>)
      return "an integer";
    else if constexpr (std::is_same_v<T, double>)
      return "a number";
    else
      return "a single value";
  }

  [[noreturn]] void fail(const YAML::Node& node, const std::string& path, const std::string& expected) const {
    std::string got = node.IsScalar()     ? "'" + node.Scalar() + "'"
                      : node.IsSequence() ? std::string("a list")
                      : node.IsMap()      ? std::string("a mapping")
                                          : std::string("nothing");
    throw ConfigError(source_.file + ": " + path + where(node, path, source_) + ": expected " + expected + ", got " +
                      got);
  }

  const Source& source_;
  YAML::Node node_;
  std::string path_;
  std::vector<std::string> known_;
};

// ---- Writer ----------------------------------------------------------------

class Writer {
 public:
  explicit Writer(YAML::Emitter& out) : out_(out) {}

  template <class T>
  void operator()(const char* key, T& value, const char* /*doc*/) {
    out_ << YAML::Key << key << YAML::Value;
    write(value);
  }

  template <class T>
  void write(T& value) {
    if constexpr (is_optional<T>::value) {
      if (value)
        write(*value);
      else
        out_ << YAML::Null;
    } else if constexpr (std::is_enum_v<T>) {
      out_ << to_string(value);
    } else if constexpr (is_scalar_v<T>) {
      out_ << value;
    } else if constexpr (is_vector<T>::value) {
      out_ << YAML::Flow << YAML::BeginSeq;
      if constexpr (!is_scalar_v<typename T::value_type>) out_ << YAML::Block;
      for (auto& item : value) write(item);
      out_ << YAML::EndSeq;
    } else if constexpr (is_map<T>::value) {
      out_ << YAML::BeginMap;
      for (auto& [k, v] : value) {
        out_ << YAML::Key << k << YAML::Value;
        write(v);
      }
      out_ << YAML::EndMap;
    } else {
      out_ << YAML::BeginMap;
      schema::describe(*this, value);
      out_ << YAML::EndMap;
    }
  }

 private:
  YAML::Emitter& out_;
};

// ---- Key reference ---------------------------------------------------------

class KeyLister {
 public:
  KeyLister(std::vector<ConfigKeyDoc>& docs, std::string path) : docs_(docs), path_(std::move(path)) {}

  template <class T>
  void operator()(const char* key, T& value, const char* doc) {
    const std::string path = join_path(path_, key);
    using Inner = optional_inner_t<T>;
    if constexpr (!is_scalar_v<Inner> && !is_vector<Inner>::value && !is_map<Inner>::value) {
      docs_.push_back({path, "", doc});
      Inner section{};
      if constexpr (is_optional<T>::value) {
        if (value) section = *value;
      } else {
        section = value;
      }
      KeyLister nested(docs_, path);
      schema::describe(nested, section);
    } else if constexpr (is_map<Inner>::value && !std::is_same_v<Inner, std::map<std::string, std::string>>) {
      docs_.push_back({path, "{}", doc});
      typename Inner::mapped_type section{};
      KeyLister nested(docs_, path + "[<name>]");
      schema::describe(nested, section);
    } else if constexpr (is_section_list<Inner>::value) {
      docs_.push_back({path, "[]", doc});
      typename Inner::value_type section{};
      KeyLister nested(docs_, path + "[]");
      schema::describe(nested, section);
    } else {
      YAML::Emitter out;
      out << YAML::Flow;
      Writer(out).write(value);
      docs_.push_back({path, out.c_str(), doc});
    }
  }

 private:
  std::vector<ConfigKeyDoc>& docs_;
  std::string path_;
};

// ---- --set overrides ---------------------------------------------------------

// "a.b[c.d].e" -> {"a", "b", "c.d", "e"}
std::vector<std::string> split_key(const std::string& key, const std::string& original) {
  std::vector<std::string> parts;
  std::string current;
  for (size_t i = 0; i < key.size(); ++i) {
    const char ch = key[i];
    if (ch == '.') {
      if (!current.empty()) parts.push_back(current);
      current.clear();
    } else if (ch == '[') {
      if (!current.empty()) parts.push_back(current);
      current.clear();
      const auto close = key.find(']', i);
      if (close == std::string::npos) throw UsageError("--set " + original + ": '[' without ']'");
      parts.push_back(key.substr(i + 1, close - i - 1));
      i = close;
    } else {
      current += ch;
    }
  }
  if (!current.empty()) parts.push_back(current);
  if (parts.empty()) throw UsageError("--set " + original + ": empty key");
  return parts;
}

// Applies one --set assignment; returns the key path it sets ("a.b.c").
std::string apply_override(YAML::Node& root, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw UsageError("--set " + assignment + ": expected key=value, e.g. --set calibration_inputs.batch_size=16");
  const auto parts = split_key(assignment.substr(0, eq), assignment);
  YAML::Node value;
  try {
    value = YAML::Load(assignment.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    throw UsageError("--set " + assignment + ": value is not valid YAML: " + e.msg);
  }
  // Walk with the node API: yaml-cpp nodes are handles, so assigning through
  // a copied handle edits the tree in place.
  std::vector<YAML::Node> chain{root};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node parent = chain.back();
    if (!parent.IsMap() && !parent.IsNull())
      throw UsageError("--set " + assignment + ": '" + parts[i] + "' is inside a value that is not a mapping");
    YAML::Node child = parent[parts[i]];
    if (!child.IsDefined() || child.IsNull()) {
      parent[parts[i]] = YAML::Node(YAML::NodeType::Map);
      child = parent[parts[i]];
    }
    chain.push_back(child);
  }
  YAML::Node parent = chain.back();
  if (!parent.IsMap() && !parent.IsNull())
    throw UsageError("--set " + assignment + ": the parent of '" + parts.back() + "' is not a mapping");
  parent[parts.back()] = value;
  std::string key;
  for (const auto& part : parts) key += (key.empty() ? "" : ".") + part;
  return key;
}

// yaml-cpp keeps the first of two equal keys and drops the second silently;
// an override appended at the end of a file would be ignored.
void refuse_duplicate_keys(const YAML::Node& node, const std::string& path, const std::string& file) {
  if (node.IsSequence())
    for (size_t i = 0; i < node.size(); ++i) refuse_duplicate_keys(node[i], path + "[" + std::to_string(i) + "]", file);
  if (!node.IsMap()) return;
  std::map<std::string, int> first_line;
  for (const auto& entry : node) {
    const std::string key = key_text(entry.first, path, file);
    const int line = entry.first.Mark().line + 1;
    if (const auto seen = first_line.find(key); seen != first_line.end())
      throw ConfigError(file + ": key '" + join_path(path, key) + "' is given twice (lines " +
                        std::to_string(seen->second) + " and " + std::to_string(line) + "); keep one");
    first_line[key] = line;
    refuse_duplicate_keys(entry.second, join_path(path, key), file);
  }
}

// yaml-cpp reports a tab in the indentation as a misplaced value; say what it is.
std::string tab_hint(const std::string& text) {
  std::istringstream lines(text);
  std::string line;
  for (int number = 1; std::getline(lines, line); ++number) {
    const auto first = line.find_first_not_of(" \t");
    if (line.find('\t') < std::min(first, line.size()))
      return "; line " + std::to_string(number) + " is indented with a tab: YAML indents with spaces only";
  }
  return "";
}

}  // namespace

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::vector<std::string> nearest_names(const std::string& word, const std::vector<std::string>& candidates,
                                       size_t count) {
  std::vector<std::pair<size_t, std::string>> scored;
  for (const auto& c : candidates) scored.emplace_back(edit_distance(word, c), c);
  std::stable_sort(scored.begin(), scored.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
  std::vector<std::string> out;
  for (size_t i = 0; i < scored.size() && i < count; ++i) out.push_back(scored[i].second);
  return out;
}

ExperimentConfig parse_config(const std::string& yaml_text, const std::string& source,
                              const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(source + ": not valid YAML: " + e.what() + tab_hint(yaml_text));
  }
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) throw ConfigError(source + ": the experiment must be a YAML mapping of keys");
  refuse_duplicate_keys(root, "", source);
  Source origin{source, {}};
  for (const auto& assignment : overrides) origin.assignments[apply_override(root, assignment)] = assignment;

  ExperimentConfig config;
  // A deployment preset supplies the defaults of quantization_settings: keys
  // the experiment leaves out take the target's values, not the generic ones.
  const YAML::Node& read_only = root;  // const lookups never add keys
  if (const auto quantization = read_only["quantization_settings"]; quantization && !quantization.IsNull()) {
    const auto deployment = read_only["deployment_settings"];
    const auto target = deployment && deployment.IsMap() ? deployment["target"] : YAML::Node();
    if (target.IsDefined() && target.IsScalar())
      config.quantization_settings = preset_quantization_settings(
          enum_from_string<Target>(target.Scalar(), source + ": deployment_settings.target"));
  }
  Reader reader(origin, root, "");
  schema::describe(reader, config);
  reader.finish();
  // "out/" and "out": one directory, and paths joined to it print without "//".
  for (std::string* dir : {&config.out_dir, &config.logs_dir})
    while (dir->size() > 1 && dir->back() == '/') dir->pop_back();
  try {
    config.validate();
  } catch (const ConfigError& e) {
    throw ConfigError(source + ": " + e.what());
  }
  return config;
}

ExperimentConfig load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot open the experiment file");
  std::stringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), path, overrides);
}

ExperimentConfig load_sweep_task(const std::string& path, const std::vector<std::string>& overrides, int64_t index) {
  const ExperimentConfig base = load_config(path, overrides);
  const auto count = static_cast<int64_t>(base.sweep.size());
  if (count == 0)
    throw ConfigError(path + ": sweep task " + std::to_string(index) + " asked for, but the experiment has no sweep");
  if (index < 0 || index >= count)
    throw ConfigError(path + ": sweep task " + std::to_string(index) + " does not exist: the sweep has " +
                      std::to_string(count) + " setting(s), tasks 0.." + std::to_string(count - 1));
  const std::string key = "sweep[" + std::to_string(index) + "]";
  std::vector<std::string> all = overrides;
  all.insert(all.end(), base.sweep[index].begin(), base.sweep[index].end());
  ExperimentConfig task;
  try {
    task = load_config(path, all);
  } catch (const Error& e) {
    std::string message = e.what();  // drop the file name it repeats
    if (message.rfind(path + ": ", 0) == 0) message = message.substr(path.size() + 2);
    throw ConfigError(path + ": " + key + ": " + message);
  }
  const std::string suffix = "sweep-" + std::to_string(index);
  if (task.out_dir == base.out_dir) task.out_dir = (std::filesystem::path(base.out_dir) / suffix).string();
  if (!task.logs_dir.empty() && task.logs_dir == base.logs_dir)
    task.logs_dir = (std::filesystem::path(base.logs_dir) / suffix).string();
  task.sweep.clear();  // the task is one setting; its config.yaml records that one
  return task;
}

std::string config_to_yaml(const ExperimentConfig& config) {
  YAML::Emitter out;
  ExperimentConfig copy = config;  // describe() takes non-const references
  Writer(out).write(copy);
  return std::string(out.c_str()) + "\n";
}

std::vector<ConfigKeyDoc> config_key_reference() {
  std::vector<ConfigKeyDoc> docs;
  ExperimentConfig defaults;
  defaults.quantization_settings.emplace();  // document the sections' defaults
  defaults.calibration_inputs.emplace();
  defaults.tracing_inputs.emplace();
  defaults.deployment_settings.emplace();
  KeyLister lister(docs, "");
  schema::describe(lister, defaults);
  return docs;
}

}  // namespace qforge
