// A compile's artifacts, written as one set: every file is staged in a
// directory beside them (same file system), and only when all are complete
// and on disk are they renamed into place. A failure while staging (no space,
// no permission) leaves the previous set whole and no temporary file behind.
// The writer must hold out_dir's lock (output_dir.h): staging directories of
// killed writers are removed.
#pragma once
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

namespace qforge {

class ArtifactSet {
 public:
  // `names`: every artifact a compile may write, so a file the new set lacks
  // (model.qforge.onnx of an earlier run) does not stay beside it.
  ArtifactSet(std::string dir, std::vector<std::string> names);
  ~ArtifactSet();  // removes the staging directory (and what a failed run staged in it)
  ArtifactSet(const ArtifactSet&) = delete;
  ArtifactSet& operator=(const ArtifactSet&) = delete;

  // Stages `content` as `name`; OutputDirError naming dir/name ("no space left on device").
  void add(const std::string& name, const std::string& content);
  // Stages what `write` streams as `name` (a model too large to hold twice in memory); its size.
  int64_t add_stream(const std::string& name, const std::function<void(std::ostream&)>& write);
  // Renames every staged file into `dir`, removes the known artifacts not staged.
  void commit();

 private:
  std::string dir_, staging_;
  std::vector<std::string> names_, staged_;
};

}  // namespace qforge
