#include "output/output_dir.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>

#include "qforge/errors.h"
#include "runtime/logger.h"
#include "util/text.h"

namespace qforge {
namespace {

namespace fs = std::filesystem;

std::string this_host() {
  char name[256] = {0};
  ::gethostname(name, sizeof(name) - 1);
  return name;
}

std::string slurm_job() {
  const char* job = std::getenv("SLURM_JOB_ID");
  return job ? job : "";
}

struct Holder {
  std::string host, pid, job, started;
  std::string text() const {
    return "host " + host + ", PID " + pid + (job.empty() ? "" : ", SLURM job " + job) + ", since " + started;
  }
};

Holder read_holder(const std::string& file) {
  Holder h;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    const std::string key = line.substr(0, eq), value = line.substr(eq + 1);
    if (key == "host") h.host = value;
    if (key == "pid") h.pid = value;
    if (key == "job") h.job = value;
    if (key == "started") h.started = value;
  }
  return h;
}

// Why the holder's lock may be taken over ("" when it may not).
std::string stale_because(const Holder& h, const std::string& file) {
  if (h.host.empty() || h.pid.empty()) {  // a writer killed between creating the lock and filling it
    std::error_code ec;
    const auto age = fs::file_time_type::clock::now() - fs::last_write_time(file, ec);
    return !ec && age > std::chrono::seconds(10) ? "an empty lock file, older than 10 s" : "";
  }
  if (!h.job.empty() && h.job == slurm_job()) return "an earlier run of this SLURM job (requeued)";
  if (h.host != this_host()) return "";
  const long pid = std::strtol(h.pid.c_str(), nullptr, 10);
  if (pid <= 0) return "unreadable";
  if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return "PID " + h.pid + " no longer runs";
  return "";
}

// Creates the lock file; false when it exists.
bool create_lock(const std::string& file) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0) {
    if (errno == EEXIST) return false;
    throw OutputDirError(file + ": cannot create the output directory's lock: " + std::strerror(errno));
  }
  const std::time_t now = std::time(nullptr);
  char started[32];
  std::strftime(started, sizeof(started), "%Y-%m-%d %H:%M:%S", std::localtime(&now));
  const std::string content = "host=" + this_host() + "\npid=" + std::to_string(::getpid()) + "\njob=" + slurm_job() +
                              "\nstarted=" + started + "\n";
  const bool whole = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
  ::close(fd);
  if (!whole) {
    ::unlink(file.c_str());
    throw OutputDirError(file + ": cannot write the output directory's lock: " + std::strerror(errno));
  }
  return true;
}

std::mutex registry_mutex;
std::map<std::string, int> held;  // canonical directory -> holders in this process

}  // namespace

void check_output_directory(const std::string& path, int64_t expected_bytes) {
  std::error_code ec;
  if (fs::exists(path, ec) && !fs::is_directory(path, ec))
    throw OutputDirError("out_dir " + path + ": exists and is not a directory");
  fs::create_directories(path, ec);
  if (ec) throw OutputDirError("out_dir " + path + ": cannot create the directory: " + ec.message());
  if (::access(path.c_str(), W_OK | X_OK) != 0)
    throw OutputDirError("out_dir " + path + ": not writable by this user (" + std::strerror(errno) + ")");
  struct statvfs disk {};
  if (::statvfs(path.c_str(), &disk) == 0) {
    const auto free_bytes = static_cast<int64_t>(disk.f_bavail) * static_cast<int64_t>(disk.f_frsize);
    if (free_bytes < expected_bytes)
      throw OutputDirError("out_dir " + path + ": no space left on device for the artifacts: " + size_text(free_bytes) +
                           " free, about " + size_text(expected_bytes) + " needed");
  }
}

OutputDirectoryLock::OutputDirectoryLock(const std::string& path) {
  check_output_directory(path, 0);
  key_ = fs::weakly_canonical(path).string();
  std::lock_guard<std::mutex> guard(registry_mutex);
  if (held[key_]++ > 0) return;  // this process holds it already
  const std::string file = key_ + "/.qforge.lock";
  try {
    if (create_lock(file)) return;
    const Holder holder = read_holder(file);
    const std::string why = stale_because(holder, file);
    if (why.empty())
      throw OutputDirError("out_dir " + path + ": another compile is writing there (" + holder.text() +
                           "); wait for it to end, or choose another out_dir");
    log::warn("out_dir " + path + ": taking over the lock of " + holder.text() + ": " + why);
    ::unlink(file.c_str());
    if (!create_lock(file))
      throw OutputDirError("out_dir " + path + ": another compile took the lock at the same moment (" +
                           read_holder(file).text() + ")");
  } catch (...) {
    --held[key_];
    throw;
  }
}

OutputDirectoryLock::~OutputDirectoryLock() {
  std::lock_guard<std::mutex> guard(registry_mutex);
  if (--held[key_] == 0) ::unlink((key_ + "/.qforge.lock").c_str());
}

}  // namespace qforge
