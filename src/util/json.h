// Boost.JSON, header-only: json.cpp compiles its implementation once.
#pragma once
#include <boost/json.hpp>

namespace qforge {
namespace json = boost::json;
// Indented JSON text, for files people read.
std::string pretty_json(const json::value& value);
}  // namespace qforge
