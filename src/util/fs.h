// Files that are either complete or absent: write to a temporary name in the
// same directory, flush to disk, then rename (atomic on POSIX).
#pragma once
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>

namespace qforge {

// `write` fills the temporary path it is given; on success it is renamed to
// `path`, on an exception it is removed and the exception propagates.
void write_atomic(const std::string& path, const std::function<void(const std::string& temporary)>& write);
// Calls `write` with a stream into `path`, flushes the file to disk and returns
// its size; a write error (no space left, ...) is an OutputDirError naming
// `shown` (the file the user knows of, when `path` is a temporary one).
int64_t write_stream_durably(const std::string& path, const std::function<void(std::ostream&)>& write,
                             const std::string& shown);
void write_file_durably(const std::string& path, const std::string& content, const std::string& shown);
void write_file_atomic(const std::string& path, const std::string& content);
void ensure_directory(const std::string& path);
// Removes `path` and everything under it (symbolic links themselves, not what
// they point to); errors are ignored: it is for cleaning up what qforge made.
// Not std::filesystem::remove_all: LibTorch builds made for old systems (the
// PyTorch wheels) carry and export their own copy of it, which the dynamic
// linker may bind qforge's calls to, and that copy crashed (PyTorch 2.11).
void remove_tree(const std::string& path);

}  // namespace qforge
