// Files that are either complete or absent: write to a temporary name in the
// same directory, flush to disk, then rename (atomic on POSIX).
#pragma once
#include <string>

namespace qforge {

void write_file_atomic(const std::string& path, const std::string& content);
void ensure_directory(const std::string& path);

}  // namespace qforge
