// libFuzzer target: the YAML experiment reader with --set overrides, as
// `qforge compile` and `qforge config show` call it. The input is the YAML text;
// lines after a line "#--set" are --set assignments. Refusing with a
// qforge::Error (a message naming the key) is the expected way out; any other
// exception, a crash, or a sanitizer report is a bug. An experiment that loads
// must also write a resolved config.yaml that loads again to the same text.
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "qforge/config_yaml.h"
#include "qforge/errors.h"

namespace {

std::vector<std::string> overrides_after(const std::string& input, size_t split) {
  std::vector<std::string> sets;
  if (split == std::string::npos) return sets;
  std::istringstream lines(input.substr(split + 8));
  std::string line;
  while (std::getline(lines, line))
    if (!line.empty()) sets.push_back(line);
  return sets;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t split = input.find("\n#--set\n");
  const std::string yaml = input.substr(0, split);
  std::string resolved;
  try {
    resolved = qforge::config_to_yaml(qforge::parse_config(yaml, "fuzz.yaml", overrides_after(input, split)));
  } catch (const qforge::Error&) {
    return 0;  // refused with a message
  }
  std::string again;
  try {
    again = qforge::config_to_yaml(qforge::parse_config(resolved, "config.yaml", {}));
  } catch (const qforge::Error& e) {
    std::fprintf(stderr, "the resolved config does not load again: %s\n%s\n", e.what(), resolved.c_str());
    std::abort();
  }
  if (again != resolved) {
    std::fprintf(stderr, "the resolved config changes when loaded again:\n%s\n---\n%s\n", resolved.c_str(),
                 again.c_str());
    std::abort();
  }
  return 0;
}
