#include "util/fs.h"

#include <fcntl.h>
#include <ftw.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <ostream>
#include <streambuf>

#include "qforge/errors.h"

namespace qforge {

void ensure_directory(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) throw OutputDirError(path + ": cannot create directory: " + ec.message());
}

namespace {

int remove_entry(const char* path, const struct stat*, int, struct FTW*) {
  ::remove(path);  // a file, a link or (visited after its contents) a directory
  return 0;        // go on whatever failed
}

}  // namespace

void remove_tree(const std::string& path) {
  constexpr int kOpenDirectories = 16;
  ::nftw(path.c_str(), remove_entry, kOpenDirectories, FTW_DEPTH | FTW_PHYS);
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

namespace {

// An unbuffered stream into a file descriptor that keeps the first write error
// instead of throwing it: a writer such as LibTorch's cannot recover from an
// exception in mid-file (its destructor writes again, and the process aborts).
class FileSink : public std::streambuf {
 public:
  explicit FileSink(int fd) : fd_(fd) {}
  int error() const { return error_; }
  int64_t bytes() const { return bytes_; }

 protected:
  std::streamsize xsputn(const char* data, std::streamsize count) override {
    for (std::streamsize done = 0; done < count && !error_;) {
      const ssize_t n = ::write(fd_, data + done, static_cast<size_t>(count - done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0)
        error_ = errno;
      else
        done += n, bytes_ += n;
    }
    return count;  // taken; a failure is reported once the writer is done
  }
  int_type overflow(int_type c) override {
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
      const char ch = traits_type::to_char_type(c);
      xsputn(&ch, 1);
    }
    return traits_type::not_eof(c);
  }

 private:
  int fd_;
  int error_ = 0;
  int64_t bytes_ = 0;
};

}  // namespace

int64_t write_stream_durably(const std::string& path, const std::function<void(std::ostream&)>& write,
                             const std::string& shown) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw OutputDirError(shown + ": cannot write: " + std::strerror(errno));
  FileSink sink(fd);
  std::ostream out(&sink);
  try {
    write(out);
  } catch (...) {
    ::close(fd);
    throw;
  }
  // fsync and close report what delayed allocation found (a full disk, say).
  int error = sink.error();
  if (!error && ::fsync(fd) != 0) error = errno;
  if (::close(fd) != 0 && !error) error = errno;
  if (error) throw OutputDirError(shown + ": cannot write: " + std::strerror(error));
  return sink.bytes();
}

void write_file_durably(const std::string& path, const std::string& content, const std::string& shown) {
  write_stream_durably(
      path, [&](std::ostream& out) { out.write(content.data(), static_cast<std::streamsize>(content.size())); }, shown);
}

void write_file_atomic(const std::string& path, const std::string& content) {
  write_atomic(path, [&](const std::string& temporary) { write_file_durably(temporary, content, path); });
}

}  // namespace qforge
