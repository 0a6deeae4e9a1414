#include "qforge/logger.h"

#include <chrono>
#include <ctime>
#include <filesystem>
#include <iomanip>
#include <iostream>

#include "qforge/errors.h"

namespace qforge {
namespace {

const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::Debug: return "debug";
    case LogLevel::Info: return "info";
    case LogLevel::Warn: return "warn";
    case LogLevel::Error: return "error";
  }
  return "?";
}

std::string timestamp() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  localtime_r(&t, &tm);
  std::ostringstream out;
  out << std::put_time(&tm, "%Y-%m-%d %H:%M:%S");
  return out.str();
}

}  // namespace

Logger& Logger::instance() {
  static Logger logger;
  return logger;
}

void Logger::open(const std::string& logs_dir, int rank) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::error_code ec;
  std::filesystem::create_directories(logs_dir, ec);
  path_ = logs_dir + "/rank-" + std::to_string(rank) + ".log";
  file_.open(path_, std::ios::app);
  if (!file_) throw Error(path_ + ": cannot open the log file for writing");
}

void Logger::write(LogLevel level, const std::string& message) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (file_) file_ << timestamp() << " [" << level_name(level) << "] " << message << std::endl;
  if (console_ && level >= console_level_) {
    auto& stream = level >= LogLevel::Warn ? std::cerr : std::cout;
    if (level >= LogLevel::Warn) stream << "qforge: " << level_name(level) << ": ";
    stream << message << std::endl;
  }
}

namespace log {
void debug(const std::string& m) { Logger::instance().write(LogLevel::Debug, m); }
void info(const std::string& m) { Logger::instance().write(LogLevel::Info, m); }
void warn(const std::string& m) { Logger::instance().write(LogLevel::Warn, m); }
void error(const std::string& m) { Logger::instance().write(LogLevel::Error, m); }
}  // namespace log

}  // namespace qforge
