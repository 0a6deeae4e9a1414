// Files that are either complete or absent: write to a temporary name in the
// same directory, flush to disk, then rename (atomic on POSIX).
#pragma once
#include <functional>
#include <string>

namespace qforge {

// `write` fills the temporary path it is given; on success it is renamed to
// `path`, on an exception it is removed and the exception propagates.
void write_atomic(const std::string& path, const std::function<void(const std::string& temporary)>& write);
void write_file_atomic(const std::string& path, const std::string& content);
void ensure_directory(const std::string& path);

}  // namespace qforge
