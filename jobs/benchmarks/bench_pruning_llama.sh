#!/usr/bin/env bash
# Pruning's wall time on the 1.1B-parameter Llama-architecture decoder of
# bench_gptq_llama.sh (random weights; 16 blocks of width 2048) on one GPU, next to
# GPTQ's: Wanda and SparseGPT at 50% and 2:4, block by block on their kept inputs, and
# SparseGPT 2:4 followed by GPTQ's 4-bit weights (the masks held). Embeddings and the
# output layer dense. Writes RESULTS_DIR/pruning_llama.md: the pruning and GPTQ phases'
# seconds (median of REPEAT), the whole compile and the peak GPU memory.
# Usage: bash jobs/benchmarks/bench_pruning_llama.sh RESULTS_DIR
#   SEQUENCES (default 128) of LENGTH tokens (default 2048); BATCH (default 4); REPEAT (default 1).
set -euo pipefail
cd "$(dirname "$0")/../.."
RESULTS=${1:-out/bench/gpu}
mkdir -p "$RESULTS"
export QFORGE=${QFORGE:-build-gpu/qforge} PYTHON=${PYTHON:-python3} DEVICE=cuda
export MODEL=llama SIZE=${LENGTH:-2048} ROWS=${SEQUENCES:-128} BATCH=${BATCH:-4} REPEAT=${REPEAT:-1} RANKS=1
export WORK=${WORK:-out/bench/pruning-llama}
source jobs/benchmarks/bench_common.sh
base="model: {path: $WORK/llama.pt}
calibration_inputs: {files: [$WORK/llama_calibration.h5], batch_size: $BATCH}
layer_quantization_settings: {embed: {skip: true}, head: {pruning: {enabled: false}}}"
gptq="deployment_settings: {target: libtorch, onnx: false}
quantization_settings:
  weights: {bits: 4, granularity: group, group_size: 128, algorithm: gptq}
  activations: {enabled: false}"
printf '%s\n%s\n' "$base" "pruning_settings: {method: magnitude, sparsity: 0}" > "$WORK/dense_gptq.yaml"
printf '%s\n' "$gptq" >> "$WORK/dense_gptq.yaml"
for row in "wanda 0.5 unstructured" "wanda 0.5 2:4" "sparsegpt 0.5 unstructured" "sparsegpt 0.5 2:4"; do
  set -- $row
  printf '%s\npruning_settings: {method: %s, sparsity: %s, pattern: "%s"}\n' "$base" "$1" "$2" "$3" \
    > "$WORK/$1-${3/:/of}.yaml"
done
cp "$WORK/sparsegpt-2of4.yaml" "$WORK/sparsegpt-2of4-gptq.yaml"
printf '%s\n' "$gptq" >> "$WORK/sparsegpt-2of4-gptq.yaml"
out=$RESULTS/pruning_llama.md
{
  echo "Pruning and GPTQ, 1.1B-parameter Llama-architecture decoder, $ROWS sequences of $SIZE tokens, batch $BATCH, one GPU"
  machine_lines
  echo
  echo "| compile | pruning s | GPTQ s | compile s | peak GPU memory |"
  echo "| --- | ---: | ---: | ---: | ---: |"
} > "$out"
for name in ${NAMES:-dense_gptq wanda-unstructured wanda-2of4 sparsegpt-unstructured sparsegpt-2of4 sparsegpt-2of4-gptq}; do
  for r in $(seq "$REPEAT"); do
    start=$(date +%s.%N)
    "$QFORGE" compile "$WORK/$name.yaml" --set out_dir="$WORK/$name-$r" --set device=cuda > "$WORK/$name-$r.log" 2>&1 \
      || { tail -30 "$WORK/$name-$r.log"; exit 1; }
    "$PY" -c "print($(date +%s.%N) - $start)" > "$WORK/$name-$r.wall"
  done
  "$PY" - "$name" "$WORK" "$REPEAT" >> "$out" <<'PY'
import json, statistics, sys
name, work, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
prune, gptq, wall, peak = [], [], [], 0
for r in range(1, repeat + 1):
    phases = json.load(open(f"{work}/{name}-{r}/report.json"))["phases"]
    prune.append(sum(max(p["seconds_per_rank"]) for p in phases if p["phase"].startswith("pruning")))
    gptq.append(sum(max(p["seconds_per_rank"]) for p in phases if p["phase"].startswith("gptq")))
    wall.append(float(open(f"{work}/{name}-{r}.wall").read()))
    peak = max([peak] + [max(p.get("peak_bytes_per_rank", [0])) for p in phases])
print(f"| {name} | {statistics.median(prune):.1f} | {statistics.median(gptq):.1f} | {statistics.median(wall):.1f} | "
      f"{peak / 2**30:.1f} GiB |")
PY
done
cat "$out"
