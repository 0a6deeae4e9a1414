#pragma once
#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

namespace qforge::test {

// Directory of the models and HDF5 files made by tests/models/make_test_assets.py.
inline std::string asset(const std::string& name) {
  const char* dir = std::getenv("QFORGE_TEST_ASSETS");
  return std::string(dir ? dir : "test_assets") + "/" + name;
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
