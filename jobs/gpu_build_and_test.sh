#!/usr/bin/env bash
# On a GPU machine (Ubuntu 24.04, PyTorch 2.11 + CUDA, nothing to download):
# configure against the LibTorch of the installed PyTorch, build, run the tests.
# Usage: bash jobs/gpu_build_and_test.sh [RESULTS_DIR]
#   CTEST_ARGS="-R gpu_" picks tests; HF_TABLE=FILE then runs the transformers/timm suite
#   (tests/hf/test_hf_models.py) as a script and writes its table (docs/transformers.md).
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${1:-build-gpu/results}
mkdir -p "$RESULTS"
PY=${PYTHON:-python3}
TORCH_PREFIX=$($PY -c 'import torch;print(torch.utils.cmake_prefix_path)')
{
  echo "host: $(hostname)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  $PY -c 'import torch;print("torch", torch.__version__, "cuda", torch.version.cuda)'
  $PY -c 'import h5py;print("h5py", h5py.__version__)' 2>&1 | tail -1
} | tee "$RESULTS/machine.txt"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
start=$(date +%s)
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" \
  -DQFORGE_PYTHON="$(command -v $PY)" -DQFORGE_BUILD_BENCHMARKS=ON ${QFORGE_PREBUILT_ASSETS:+-DQFORGE_PREBUILT_ASSETS=$QFORGE_PREBUILT_ASSETS} > "$RESULTS/configure.log" 2>&1 || { tail -40 "$RESULTS/configure.log"; exit 1; }
cmake --build build-gpu -j"$(nproc)" > "$RESULTS/build.log" 2>&1 || { grep -E "error|Error" "$RESULTS/build.log" | head -40; exit 1; }
echo "build: $(( $(date +%s) - start )) s on $(nproc) cores" | tee -a "$RESULTS/machine.txt"
# shellcheck disable=SC2086  # CTEST_ARGS holds several arguments
ctest --test-dir build-gpu --output-on-failure -j8 ${CTEST_ARGS:-} > "$RESULTS/ctest.log" 2>&1
rc=$?
tail -15 "$RESULTS/ctest.log"
if [ -n "${HF_TABLE:-}" ]; then
  QFORGE_BIN=build-gpu/qforge $PY tests/hf/test_hf_models.py --table "$HF_TABLE" --jobs "$(nproc)" \
    > "$RESULTS/hf.log" 2>&1 || rc=1
  tail -40 "$RESULTS/hf.log"
fi
exit $rc
