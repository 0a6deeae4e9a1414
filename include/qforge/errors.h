// Typed errors. Every message names what the user must fix: the file, the
// config key, the sample index or the layer, and what was expected.
#pragma once
#include <stdexcept>
#include <string>

namespace qforge {

// Base of all qforge errors; exit_code() is what the CLI returns.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg, int exit_code = 1) : std::runtime_error(msg), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

// Exit codes are part of the command-line contract (README, "Exit codes").
enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,   // internal or runtime failure
  kExitUsage = 2,     // bad command line
  kExitConfig = 3,    // bad YAML experiment
  kExitData = 4,      // bad calibration data
  kExitModel = 5,     // model does not load or does not fit the data
  kExitLibrary = 6,   // MPI / HDF5 / NCCL / CUDA error
  kExitExport = 7,    // the compiled model cannot be written for the target (ONNX op, rule or opset)
  kExitOutput = 8,    // the output directory cannot be used (not writable, no space, held by another compile)
  kExitStopped = 75,  // stopped by a signal after writing a checkpoint: run again to resume (EX_TEMPFAIL)
};

struct UsageError : Error {
  explicit UsageError(const std::string& m) : Error(m, kExitUsage) {}
};
struct ConfigError : Error {
  explicit ConfigError(const std::string& m) : Error(m, kExitConfig) {}
};
struct DataError : Error {
  explicit DataError(const std::string& m) : Error(m, kExitData) {}
};
struct ModelError : Error {
  explicit ModelError(const std::string& m) : Error(m, kExitModel) {}
};
struct LibraryError : Error {
  explicit LibraryError(const std::string& m) : Error(m, kExitLibrary) {}
};
struct ExportError : Error {
  explicit ExportError(const std::string& m) : Error(m, kExitExport) {}
};

struct OutputDirError : Error {
  explicit OutputDirError(const std::string& m) : Error(m, kExitOutput) {}
};

// Thrown on ranks that did not fail themselves when a collective check
// learned that another rank failed; that rank's message was already printed.
struct PeerFailed : Error {
  PeerFailed(const std::string& m, int code) : Error(m, code) {}
};

// "at file.cpp:42 on rank 3 (host)": where a library call failed.
std::string error_location(const char* file, int line);

}  // namespace qforge
