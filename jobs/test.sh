#!/usr/bin/env bash
# Set up, build, and run every test (unit, multi-rank, command line, package), then
# the unit and multi-rank tests again under AddressSanitizer + UBSan (jobs/sanitize.sh).
# Usage: bash jobs/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash jobs/setup.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ctest --test-dir build --output-on-failure -j2
bash jobs/sanitize.sh
