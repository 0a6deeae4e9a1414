// The output directory of a compile: checked before any work is done, and
// held by one compile at a time.
#pragma once
#include <cstdint>
#include <string>

namespace qforge {

// Creates `path` when it is missing and checks that it is a directory this
// process can write, with at least `expected_bytes` free for the artifacts;
// OutputDirError naming the path and what is wrong otherwise.
void check_output_directory(const std::string& path, int64_t expected_bytes);

// A lock on `path` (the file `.qforge.lock` in it, holding host, PID, SLURM job
// and start time) for the lifetime of this object. Another live compile's lock
// is an OutputDirError naming its host and PID; a lock left by a process that no
// longer runs on this host, or by an earlier run of this SLURM job (a requeue),
// is taken over with a warning. Re-entrant within one process (the CLI and the
// library call both take it).
class OutputDirectoryLock {
 public:
  explicit OutputDirectoryLock(const std::string& path);
  ~OutputDirectoryLock();
  OutputDirectoryLock(const OutputDirectoryLock&) = delete;
  OutputDirectoryLock& operator=(const OutputDirectoryLock&) = delete;

 private:
  std::string key_;  // the directory's canonical path
};

}  // namespace qforge
