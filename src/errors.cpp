#include "qforge/errors.h"

#include <unistd.h>

#include "qforge/runtime.h"

namespace qforge {

std::string error_location(const char* file, int line) {
  char host[256] = "?";
  gethostname(host, sizeof(host) - 1);
  std::string where = std::string(file) + ":" + std::to_string(line);
  const int rank = Runtime::global_rank_or(-1);
  if (rank >= 0) where += " on rank " + std::to_string(rank);
  return where + " (" + host + ")";
}

}  // namespace qforge
