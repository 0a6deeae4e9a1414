#!/usr/bin/env bash
# Calibration throughput of `qforge compile` on 1 and 2 ranks (or RANKS="1 2 4"):
# by default torchvision ResNet-18 (random weights), 512 random 3x64x64 images, TensorRT
# preset (percentile observer: ranges and histograms in one pass). MODEL, SIZE, ROWS,
# BATCH and DEVICE=cuda change the workload (jobs/benchmarks/bench_common.sh).
# Writes a Markdown table naming the machine to RESULTS (default out/bench/calibration.md).
# Usage: bash jobs/benchmarks/bench_calibration.sh [RESULTS]   (after jobs/setup.sh or a build in build/)
set -euo pipefail
cd "$(dirname "$0")/../.."
RESULTS=${1:-out/bench/calibration.md}
mkdir -p "$(dirname "$RESULTS")"
source jobs/benchmarks/bench_common.sh
cat > "$WORK/bench.yaml" <<YAML
model: {path: $WORK/$MODEL.pt}
calibration_inputs: {files: [$WORK/${MODEL}_calibration.h5], batch_size: $BATCH}
deployment_settings: {target: tensorrt}
quantization_settings: {}
YAML
{
  echo "# Calibration throughput"
  echo
  machine_lines
  echo "- model: $MODEL (random weights), $ROWS rows of size $SIZE, batch $BATCH, TensorRT preset (1 pass), device $DEVICE"
  echo "- time: the calibration pass (ranges and histograms), slowest rank"
  echo
  echo "| ranks | calibration s | samples/s | speed-up | efficiency | runs (s) |"
  echo "| ---: | ---: | ---: | ---: | ---: | --- |"
} > "$RESULTS"
table_rows "$RESULTS" "$WORK/bench.yaml" "cal_${MODEL}_" "calibrate" 1 "$ROWS"
cat "$RESULTS"
