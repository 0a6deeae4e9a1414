#include "util/text.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>

namespace qforge {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string join(const std::vector<std::string>& items, const std::string& separator) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? separator : "") + items[i];
  return out;
}

size_t column_width(const std::vector<std::string>& values, size_t minimum) {
  size_t width = minimum;
  for (const auto& v : values) width = std::max(width, v.size() + 2);
  return width;
}

std::string size_text(int64_t bytes) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(1);
  if (bytes >= (1 << 30))
    out << static_cast<double>(bytes) / (1 << 30) << " GiB";
  else if (bytes >= (1 << 20))
    out << static_cast<double>(bytes) / (1 << 20) << " MiB";
  else if (bytes >= (1 << 10))
    out << static_cast<double>(bytes) / (1 << 10) << " KiB";
  else
    out << bytes << " B";
  return out.str();
}

std::string fixed(double value, int digits) {
  if (!std::isfinite(value)) return value > 0 ? "inf" : "-";
  std::ostringstream out;
  out << std::fixed << std::setprecision(digits) << value;
  return out.str();
}

}  // namespace qforge
