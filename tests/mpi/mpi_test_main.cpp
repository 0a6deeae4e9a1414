// GoogleTest under MPI: every rank runs every test; only rank 0 prints, and a
// failure on any rank makes that rank (and so mpirun) exit non-zero.
#include <gtest/gtest.h>

#include "qforge/runtime.h"

int main(int argc, char** argv) {
  auto& runtime = qforge::Runtime::init(&argc, &argv);
  qforge::use_qforge_process_settings(runtime);  // as the qforge command runs
  ::testing::InitGoogleTest(&argc, argv);
  if (!runtime.is_root()) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int failed = RUN_ALL_TESTS();
  // Agree on the outcome, so a failure on a quiet rank is visible on rank 0.
  const auto outcomes = runtime.all_gather_int(failed);
  int any = 0;
  for (size_t r = 0; r < outcomes.size(); ++r)
    if (outcomes[r]) {
      any = 1;
      if (runtime.is_root()) fprintf(stderr, "tests failed on rank %zu\n", r);
    }
  runtime.finalize();
  return any;
}
