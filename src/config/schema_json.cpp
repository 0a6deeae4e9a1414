// The schema as JSON (qforge config schema): the visitor of schema.h that the
// reader, writer and key reference also follow, writing each field's kind,
// default, choices and meaning. Sections carry the C++ struct's name, which the
// Python package gives its settings classes.
#include <cxxabi.h>

#include <cstdlib>
#include <memory>
#include <typeinfo>

#include "config/schema.h"
#include "config/schema_traits.h"
#include "qforge/config_yaml.h"
#include "util/json.h"

namespace qforge {
namespace {

// "qforge::WeightQuantSettings" -> "WeightQuantSettings"
template <class T>
std::string struct_name() {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> demangled(abi::__cxa_demangle(typeid(T).name(), nullptr, nullptr, &status),
                                                   std::free);
  std::string name = status == 0 && demangled ? demangled.get() : typeid(T).name();
  const auto colon = name.rfind("::");
  return colon == std::string::npos ? name : name.substr(colon + 2);
}

template <class T>
const char* scalar_type() {
  if constexpr (std::is_same_v<T, bool>) return "bool";
  if constexpr (std::is_same_v<T, int64_t>) return "int";
  if constexpr (std::is_same_v<T, double>) return "float";
  if constexpr (std::is_enum_v<T>) return "enum";
  return "str";
}

// A value of the config as JSON (the same values the YAML writer writes).
template <class T>
json::value value_json(const T& value);

template <class T>
json::object fields_json(const T& section);

class FieldLister {
 public:
  explicit FieldLister(json::array& fields) : fields_(fields) {}

  template <class T>
  void operator()(const char* key, T& value, const char* doc) {
    using Inner = optional_inner_t<T>;
    json::object f;
    f["name"] = key;
    f["doc"] = doc;
    f["nullable"] = is_optional<T>::value;
    f["default"] = value_json(value);
    if constexpr (is_scalar_v<Inner>) {
      f["type"] = scalar_type<Inner>();
      if constexpr (std::is_enum_v<Inner>) f["choices"] = json::value_from(enum_names<Inner>());
    } else if constexpr (is_section_list<Inner>::value) {
      f["type"] = "sections";
      f["section"] = fields_json(typename Inner::value_type{});
    } else if constexpr (is_vector<Inner>::value) {
      f["type"] = "list";
      f["item"] = scalar_type<typename Inner::value_type>();
    } else if constexpr (is_map<Inner>::value) {
      if constexpr (is_scalar_v<typename Inner::mapped_type>) {
        f["type"] = "map";
        f["item"] = scalar_type<typename Inner::mapped_type>();
      } else {
        f["type"] = "section_map";
        f["section"] = fields_json(typename Inner::mapped_type{});
      }
    } else {
      f["type"] = "section";
      if constexpr (is_optional<T>::value)
        f["section"] = fields_json(value ? *value : Inner{});  // null by default: the section's own defaults
      else
        f["section"] = fields_json(value);
    }
    fields_.push_back(std::move(f));
  }

 private:
  json::array& fields_;
};

// What the YAML writer writes, as JSON values.
class ValueWriter {
 public:
  explicit ValueWriter(json::object& out) : out_(out) {}
  template <class T>
  void operator()(const char* key, T& value, const char* /*doc*/) {
    out_[key] = value_json(value);
  }

 private:
  json::object& out_;
};

template <class T>
json::value value_json(const T& value) {
  if constexpr (is_optional<T>::value) {
    return value ? value_json(*value) : json::value(nullptr);
  } else if constexpr (std::is_enum_v<T>) {
    return json::value(to_string(value));
  } else if constexpr (is_scalar_v<T>) {
    return json::value(value);
  } else if constexpr (is_vector<T>::value) {
    json::array a;
    for (const auto& item : value) a.push_back(value_json(item));
    return a;
  } else if constexpr (is_map<T>::value) {
    json::object o;
    for (const auto& [k, v] : value) o[k] = value_json(v);
    return o;
  } else {
    json::object o;
    T copy = value;
    ValueWriter writer(o);
    schema::describe(writer, copy);
    return o;
  }
}

template <class T>
json::object fields_json(const T& section) {
  json::object s;
  s["class"] = struct_name<T>();
  json::array fields;
  T copy = section;
  FieldLister lister(fields);
  schema::describe(lister, copy);
  s["fields"] = std::move(fields);
  return s;
}

}  // namespace

std::string config_schema_json() {
  ExperimentConfig defaults;
  return pretty_json(fields_json(defaults));
}

}  // namespace qforge
