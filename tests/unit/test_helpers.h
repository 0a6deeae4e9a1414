#pragma once
#include <cstdlib>
#include <functional>
#include <string>

#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "qforge_test_paths.h"

namespace qforge::test {

// Directory of the models and HDF5 files made by tests/models/make_test_assets.py.
inline std::string asset(const std::string& name) {
  const char* dir = std::getenv("QFORGE_TEST_ASSETS");
  return std::string(dir ? dir : QFORGE_TEST_ASSETS_DIR) + "/" + name;
}

// The Python that holds torch (Debian's /usr/bin/python3 here).
inline std::string python() {
  const char* env = std::getenv("QFORGE_PYTHON");
  return env ? env : QFORGE_TEST_PYTHON;
}

// A deterministic input that Python builds the same way:
// torch.linspace(-2, 2, numel).reshape(shape).
inline torch::Tensor ramp(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return torch::linspace(-2, 2, n).reshape(shape);
}

// The nodes of `kind` ("qforge::observe") in the module's forward, in every block.
inline int count_nodes(const torch::jit::Module& m, const std::string& kind) {
  int n = 0;
  const std::function<void(const torch::jit::Block*)> visit = [&](const torch::jit::Block* block) {
    for (const auto* node : block->nodes()) {
      n += node->kind().toQualString() == kind;
      for (const auto* inner : node->blocks()) visit(inner);
    }
  };
  visit(m.get_method("forward").graph()->block());
  return n;
}

// Runs `body`, expects exception E whose message contains every fragment.
template <class E, class F>
void expect_error(F&& body, std::initializer_list<std::string> fragments) {
  try {
    body();
    ADD_FAILURE() << "expected an error containing '" << *fragments.begin() << "'";
  } catch (const E& e) {
    const std::string what = e.what();
    for (const auto& f : fragments) EXPECT_NE(what.find(f), std::string::npos) << "'" << f << "' not in: " << what;
  }
}

}  // namespace qforge::test
