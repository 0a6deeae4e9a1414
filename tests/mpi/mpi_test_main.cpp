// GoogleTest under MPI: every rank runs every test; only rank 0 prints, and a
// failure on any rank makes that rank (and so mpirun) exit non-zero.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "qforge/runtime.h"
#include "runtime/communicator.h"

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
  const at::Tensor outcomes = qforge::make_mpi_communicator()->all_gather(at::full({1}, failed, at::kInt));
  int any = 0;
  for (int64_t r = 0; r < outcomes.size(0); ++r)
    if (outcomes[r].item<int>()) {
      any = 1;
      if (runtime.is_root()) fprintf(stderr, "tests failed on rank %lld\n", static_cast<long long>(r));
    }
  runtime.finalize();
  return any;
}
