#include <boost/json/src.hpp>

#include "util/json.h"

namespace qforge {
namespace {

void write(std::string& out, const json::value& v, int indent) {
  const std::string pad(static_cast<size_t>(indent) * 2, ' ');
  const std::string inner(static_cast<size_t>(indent + 1) * 2, ' ');
  if (v.is_object()) {
    const auto& o = v.get_object();
    if (o.empty()) {
      out += "{}";
      return;
    }
    out += "{\n";
    bool first = true;
    for (const auto& kv : o) {
      if (!first) out += ",\n";
      first = false;
      out += inner + json::serialize(json::string(kv.key())) + ": ";
      write(out, kv.value(), indent + 1);
    }
    out += "\n" + pad + "}";
  } else if (v.is_array()) {
    const auto& a = v.get_array();
    const bool flat = std::all_of(a.begin(), a.end(), [](const json::value& x) { return !x.is_structured(); });
    if (a.empty() || flat) {
      out += json::serialize(v);
      return;
    }
    out += "[\n";
    for (size_t i = 0; i < a.size(); ++i) {
      out += inner;
      write(out, a[i], indent + 1);
      out += i + 1 < a.size() ? ",\n" : "\n";
    }
    out += pad + "]";
  } else {
    out += json::serialize(v);
  }
}

}  // namespace

std::string pretty_json(const json::value& value) {
  std::string out;
  write(out, value, 0);
  return out + "\n";
}

}  // namespace qforge
