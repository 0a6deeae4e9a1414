// Small text helpers shared by the console reports.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace qforge {

std::string shape_text(const std::vector<int64_t>& shape);  // "[1, 3, 224, 224]"
std::string join(const std::vector<std::string>& items, const std::string& separator = ", ");
// The width of a table column: the longest value plus two spaces, at least `minimum`.
size_t column_width(const std::vector<std::string>& values, size_t minimum);
std::string size_text(int64_t bytes);
std::string fixed(double value, int digits);  // "12.35" for (12.345, 2); "inf", or "-" for -inf and NaN  // "532 B", "12.3 KiB", "12.3 MiB", "1.2 GiB"

}  // namespace qforge
