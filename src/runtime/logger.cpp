#include "runtime/logger.h"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <mutex>

#include "qforge/errors.h"

namespace qforge {
namespace {

// The console: information as plain lines on stdout, warnings and errors on
// stderr behind "qforge: <level>: ". Off on every rank but 0.
class ConsoleSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  std::atomic<bool> enabled{true};

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (!enabled) return;
    const std::string text(msg.payload.data(), msg.payload.size());
    if (msg.level >= spdlog::level::warn) {
      const auto name = spdlog::level::to_string_view(msg.level);
      std::fprintf(stderr, "qforge: %.*s: %s\n", static_cast<int>(name.size()), name.data(), text.c_str());
    } else {
      std::fprintf(stdout, "%s\n", text.c_str());
      std::fflush(stdout);  // in order with what the program prints itself
    }
  }
  void flush_() override { std::fflush(stdout); }
};

spdlog::level::level_enum to_spdlog(LogLevel level) {
  switch (level) {
    case LogLevel::Debug: return spdlog::level::debug;
    case LogLevel::Info: return spdlog::level::info;
    case LogLevel::Warn: return spdlog::level::warn;
    case LogLevel::Error: return spdlog::level::err;
  }
  return spdlog::level::info;
}

std::shared_ptr<ConsoleSink> console_sink() {
  static const auto sink = [] {
    auto s = std::make_shared<ConsoleSink>();
    s->set_level(spdlog::level::info);
    return s;
  }();
  return sink;
}

}  // namespace

Logger::Logger() : logger_(std::make_shared<spdlog::logger>("qforge", console_sink())) {
  logger_->set_level(spdlog::level::debug);
}

Logger& Logger::instance() {
  static Logger logger;
  return logger;
}

void Logger::set_console(bool enabled) { console_sink()->enabled = enabled; }

void Logger::open(const std::string& logs_dir, int rank) {
  std::error_code ec;
  std::filesystem::create_directories(logs_dir, ec);
  path_ = logs_dir + "/rank-" + std::to_string(rank) + ".log";
  std::shared_ptr<spdlog::sinks::basic_file_sink_mt> file;
  try {
    file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path_, /*truncate=*/false);
  } catch (const spdlog::spdlog_ex& e) {
    throw Error(path_ + ": cannot open the log file for writing (" + e.what() + ")");
  }
  file->set_pattern("%Y-%m-%d %H:%M:%S.%e [%l] %v");
  // Every line reaches the file at once: a rank that dies leaves its last words there.
  auto opened = std::make_shared<spdlog::logger>("qforge", spdlog::sinks_init_list{console_sink(), file});
  opened->set_level(spdlog::level::debug);
  opened->flush_on(spdlog::level::debug);
  std::atomic_store(&logger_, opened);
}

void Logger::write(LogLevel level, const std::string& message) {
  std::atomic_load(&logger_)->log(to_spdlog(level), message);
}

namespace log {
void debug(const std::string& m) { Logger::instance().write(LogLevel::Debug, m); }
void info(const std::string& m) { Logger::instance().write(LogLevel::Info, m); }
void warn(const std::string& m) { Logger::instance().write(LogLevel::Warn, m); }
void error(const std::string& m) { Logger::instance().write(LogLevel::Error, m); }
}  // namespace log

}  // namespace qforge
