#!/usr/bin/env bash
# Structured pruning's deployed speed on the CPU: for each share of channels in SPARSITIES
# (0: the dense model), jobs/benchmarks/bench_deploy.sh compiles each model of MODELS with
# `pruning_settings: {method: structured, sparsity: S, importance: IMPORTANCE}` for the
# onnxruntime target and times the pruned float file and the pruned INT8 file in ONNX Runtime;
# structured_table.py then sets every row against the dense float file (parameters, latency at
# batch 1, throughput at batch TPUT_BATCH, speed-ups). Random weights: speed only, not accuracy.
# Writes RESULTS_DIR/structured.md and structured.json, and each sparsity's bench_deploy results
# under RESULTS_DIR/s<S>/.
#
# Usage: bash jobs/benchmarks/bench_structured.sh [RESULTS_DIR]   (after jobs/setup.sh)
#   MODELS="resnet18 resnet50 mobilenet_v2"  SPARSITIES="0 0.3 0.5"  IMPORTANCE=l2
#   and bench_deploy.sh's settings (THREADS, SIZE, ROWS, LAT_RUNS, TPUT_BATCH, TPUT_RUNS, ...)
set -euo pipefail
cd "$(dirname "$0")/../.."
export MODELS=${MODELS:-"resnet18 resnet50 mobilenet_v2"}
SPARSITIES=${SPARSITIES:-"0 0.3 0.5"}
IMPORTANCE=${IMPORTANCE:-l2}
RESULTS=${1:-bench_results/structured-$(hostname -s)-$(date -u +%Y-%m-%dT%H%MZ)}
WORK_ROOT=${WORK:-out/bench/structured-work}
mkdir -p "$RESULTS"
status=0
for s in $SPARSITIES; do
  pruning=
  [ "$s" = 0 ] || pruning="{method: structured, sparsity: $s, importance: $IMPORTANCE}"
  echo "== channels removed: $s"
  PRUNING=$pruning WORK=$WORK_ROOT/s$s ASSETS_WORK=$WORK_ROOT bash jobs/benchmarks/bench_deploy.sh "$RESULTS/s$s" ||
    status=1
done
PY=${PYTHON:-/usr/bin/python3}
QFORGE=${QFORGE:-build/qforge} SPARSITIES=$SPARSITIES WORK=$WORK_ROOT "$PY" jobs/benchmarks/structured_table.py "$RESULTS"
echo "bench_structured: wrote $RESULTS/structured.md and $RESULTS/structured.json"
exit $status
