// Small text helpers shared by the console reports.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace qforge {

std::string shape_text(const std::vector<int64_t>& shape);            // "[1, 3, 224, 224]"
std::string join(const std::vector<std::string>& items, const std::string& separator = ", ");
std::string mib(int64_t bytes);                                        // "12.3 MiB"

}  // namespace qforge
