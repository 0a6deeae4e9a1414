#include "output/artifact_set.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "qforge/errors.h"
#include "util/fs.h"

namespace qforge {
namespace fs = std::filesystem;

ArtifactSet::ArtifactSet(std::string dir, std::vector<std::string> names)
    : dir_(std::move(dir)), names_(std::move(names)) {
  staging_ = (fs::path(dir_) / (".staging-" + std::to_string(::getpid()))).string();
  std::error_code ec;
  // The writer holds out_dir's lock: any staging directory there was left by a
  // process that was killed while writing.
  for (const auto& entry : fs::directory_iterator(dir_, ec))
    if (entry.path().filename().string().rfind(".staging-", 0) == 0) remove_tree(entry.path().string());
  fs::create_directories(staging_, ec);
  if (ec) throw OutputDirError(dir_ + ": cannot create the staging directory " + staging_ + ": " + ec.message());
}

ArtifactSet::~ArtifactSet() { remove_tree(staging_); }

void ArtifactSet::add(const std::string& name, const std::string& content) {
  write_file_durably((fs::path(staging_) / name).string(), content, (fs::path(dir_) / name).string());
  staged_.push_back(name);
}

int64_t ArtifactSet::add_stream(const std::string& name, const std::function<void(std::ostream&)>& write) {
  const int64_t bytes =
      write_stream_durably((fs::path(staging_) / name).string(), write, (fs::path(dir_) / name).string());
  staged_.push_back(name);
  return bytes;
}

void ArtifactSet::commit() {
  for (const auto& name : staged_) {
    const std::string from = (fs::path(staging_) / name).string(), to = (fs::path(dir_) / name).string();
    if (std::rename(from.c_str(), to.c_str()) != 0)
      throw OutputDirError(to + ": cannot move the finished file into place: " + std::strerror(errno));
  }
  for (const auto& name : names_)
    if (std::find(staged_.begin(), staged_.end(), name) == staged_.end()) {
      std::error_code ignored;
      fs::remove(fs::path(dir_) / name, ignored);
    }
}

}  // namespace qforge
