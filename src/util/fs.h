// Files that are either complete or absent: write to a temporary name in the
// same directory, flush to disk, then rename (atomic on POSIX).
#pragma once
#include <functional>
#include <string>

namespace qforge {

// `write` fills the temporary path it is given; on success it is renamed to
// `path`, on an exception it is removed and the exception propagates.
void write_atomic(const std::string& path, const std::function<void(const std::string& temporary)>& write);
// Writes `content` to `path` and flushes it to disk; OutputDirError names `shown`
// (the file the user knows of, when `path` is a temporary one).
void write_file_durably(const std::string& path, const std::string& content, const std::string& shown);
void write_file_atomic(const std::string& path, const std::string& content);
void ensure_directory(const std::string& path);

}  // namespace qforge
