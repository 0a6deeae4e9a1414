#!/usr/bin/env bash
# The unit and multi-rank tests built with AddressSanitizer and
# UndefinedBehaviorSanitizer (GCC, -O0) into build-asan/ and run there: any
# report fails. Uses build/'s test assets (bash jobs/setup.sh and the test run
# make them). Usage: bash jobs/sanitize.sh [build | test]   (both by default;
# jobs/test.sh builds while the other tests run, then tests)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
assets="$PWD/build/test_assets"

if [ "$mode" != test ]; then
  flags="-O0 -g1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="$flags" \
    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
    -DQFORGE_PREBUILT_ASSETS="$assets" >/dev/null
  cmake --build build-asan -j"${JOBS:-2}" --target qforge_unit_tests qforge_mpi_tests
fi
[ "$mode" = build ] && exit 0
[ -d "$assets" ] || { echo "sanitize: no $assets (run ctest in build/ first)" >&2; exit 2; }

# Leaks are not checked: LibTorch's and Open MPI's process-lifetime allocations
# would drown qforge's. Containers from the (uninstrumented) LibTorch carry no
# ASan annotations, so overflow checks of std::vector are off too.
export ASAN_OPTIONS=detect_leaks=0:detect_container_overflow=0:abort_on_error=1:print_summary=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
ctest --test-dir build-asan -R '^make_test_assets$' --output-on-failure >/dev/null
build-asan/tests/qforge_unit_tests --gtest_brief=1
# Two ranks: every collective and the sharded paths run (1 and 3 ranks run
# uninstrumented in ctest; here they would only add minutes).
mpirun -np 2 build-asan/tests/qforge_mpi_tests --gtest_brief=1
echo "sanitize: unit and multi-rank tests clean under AddressSanitizer and UndefinedBehaviorSanitizer"
