// Per-rank logging, a thin layer over spdlog: every rank writes
// <logs_dir>/rank-N.log; rank 0 also prints a concise console (information on
// stdout, warnings and errors on stderr). Messages before open() go to the
// console only.
#pragma once
#include <memory>
#include <string>

namespace spdlog {
class logger;
}

namespace qforge {

enum class LogLevel { Debug, Info, Warn, Error };

class Logger {
 public:
  static Logger& instance();

  // Opens this rank's log file (creating the directory); appends to an earlier run's.
  void open(const std::string& logs_dir, int rank);
  void set_console(bool enabled);
  const std::string& path() const { return path_; }

  void write(LogLevel level, const std::string& message);

 private:
  Logger();
  std::shared_ptr<spdlog::logger> logger_;
  std::string path_;
};

namespace log {
void debug(const std::string& m);
void info(const std::string& m);
void warn(const std::string& m);
void error(const std::string& m);
}  // namespace log

}  // namespace qforge
