// Per-rank logging: every rank writes <logs_dir>/rank-N.log; rank 0 also
// prints a concise console. Messages before open() go to the console only.
#pragma once
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>

namespace qforge {

enum class LogLevel { Debug, Info, Warn, Error };

class Logger {
 public:
  static Logger& instance();

  // Opens this rank's log file (creating the directory).
  void open(const std::string& logs_dir, int rank);
  void set_console(bool enabled) { console_ = enabled; }
  void set_console_level(LogLevel level) { console_level_ = level; }
  const std::string& path() const { return path_; }

  void write(LogLevel level, const std::string& message);

 private:
  std::mutex mutex_;
  std::ofstream file_;
  std::string path_;
  bool console_ = true;
  LogLevel console_level_ = LogLevel::Info;
};

namespace log {
void debug(const std::string& m);
void info(const std::string& m);
void warn(const std::string& m);
void error(const std::string& m);
}  // namespace log

}  // namespace qforge
