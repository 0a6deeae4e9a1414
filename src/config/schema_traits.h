// Which kind of value a schema field holds: the same compile-time tests drive
// the YAML reader and writer, the key reference and the JSON schema.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace qforge {

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};
template <class T>
struct is_vector : std::false_type {};
template <class T>
struct is_vector<std::vector<T>> : std::true_type {};
template <class T>
struct is_map : std::false_type {};
template <class T>
struct is_map<std::map<std::string, T>> : std::true_type {};
template <class T>
constexpr bool is_scalar_v = std::is_same_v<T, bool> || std::is_same_v<T, int64_t> || std::is_same_v<T, double> ||
                             std::is_same_v<T, std::string> || std::is_enum_v<T>;
// A list of sections (data_transform), as opposed to a list of scalars.
template <class T>
struct is_section_list : std::false_type {};
template <class T>
struct is_section_list<std::vector<T>> : std::bool_constant<!is_scalar_v<T> && !is_vector<T>::value> {};
// The value type of an optional field, or the field's own type.
template <class T>
struct optional_inner {
  using type = T;
};
template <class T>
struct optional_inner<std::optional<T>> {
  using type = T;
};
template <class T>
using optional_inner_t = typename optional_inner<T>::type;

}  // namespace qforge
