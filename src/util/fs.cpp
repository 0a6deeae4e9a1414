#include "util/fs.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "qforge/errors.h"

namespace qforge {

void ensure_directory(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) throw OutputDirError(path + ": cannot create directory: " + ec.message());
}

void write_atomic(const std::string& path, const std::function<void(const std::string& temporary)>& write) {
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) ensure_directory(parent.string());
  const std::string temporary = path + ".tmp." + std::to_string(getpid());
  try {
    write(temporary);
  } catch (...) {
    ::unlink(temporary.c_str());
    throw;
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(temporary.c_str());
    throw OutputDirError(path + ": cannot rename the finished file into place: " + why);
  }
}

void write_file_durably(const std::string& path, const std::string& content, const std::string& shown) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw OutputDirError(shown + ": cannot write: " + std::strerror(errno));
  size_t written = 0;
  while (written < content.size()) {
    const ssize_t n = ::write(fd, content.data() + written, content.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      throw OutputDirError(shown + ": cannot write: " + why);
    }
    written += static_cast<size_t>(n);
  }
  // fsync and close report what delayed allocation found (a full disk, say).
  if (::fsync(fd) != 0 || ::close(fd) != 0) throw OutputDirError(shown + ": cannot write: " + std::strerror(errno));
}

void write_file_atomic(const std::string& path, const std::string& content) {
  write_atomic(path, [&](const std::string& temporary) { write_file_durably(temporary, content, path); });
}

}  // namespace qforge
