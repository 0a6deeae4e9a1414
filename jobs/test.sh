#!/usr/bin/env bash
# Set up, build, and run every test (unit, multi-rank, command line, package), then
# the unit and multi-rank tests again under AddressSanitizer + UBSan (jobs/sanitize.sh).
# Usage: bash jobs/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash jobs/setup.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# The fortunes language model trains first, alone: beside the sanitizer build
# its PyTorch steps ran five times slower (0.84 s instead of 0.16 s).
ctest --test-dir build --output-on-failure -R '^fortunes_lm_perplexity$'
# The sanitizer build runs beside the tests at the lowest priority: it takes
# the cycles they leave idle (process start-up, MPI and SLURM waits) and leaves
# them their cores. Its own session, so a failed test run can stop it whole.
mkdir -p build-asan
setsid -w nice -n 19 bash jobs/sanitize.sh build > build-asan/build.log 2>&1 &
asan_build=$!
status=0
ctest --test-dir build --output-on-failure -j2 -E '^fortunes_lm_perplexity$' || status=$?
if [ "$status" != 0 ]; then
  kill -- -"$asan_build" 2>/dev/null || kill "$asan_build" 2>/dev/null || true
  exit "$status"
fi
wait "$asan_build" || { tail -40 build-asan/build.log; echo "test: the sanitizer build failed" >&2; exit 1; }
bash jobs/sanitize.sh test
