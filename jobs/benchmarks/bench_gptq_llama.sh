#!/usr/bin/env bash
# GPTQ's wall time on a Llama-architecture decoder of 1.1B parameters with
# random weights (jobs/benchmarks/llama_decoder.py: RMSNorm, rotary positions,
# grouped-query attention, SwiGLU; 16 blocks of width 2048): 4-bit weights in
# groups of 128, the 16 blocks solved in order on their kept inputs, the
# embedding float. One GPU per rank, on 1, 2, 4 ... GPUs as the machine has.
# Writes RESULTS_DIR/gptq_llama.md: GPTQ seconds (the gptq phases, slowest
# rank), the whole compile, scaling efficiency t1 / (n * tn), and the peak
# memory of the fullest GPU.
# Usage: bash jobs/benchmarks/bench_gptq_llama.sh RESULTS_DIR
#   SEQUENCES (default 512) of LENGTH tokens (default 2048); BATCH (default 4); RANKS ("1 2 4": what fits the GPUs).
set -euo pipefail
cd "$(dirname "$0")/../.."
RESULTS=${1:-out/bench/gpu}
mkdir -p "$RESULTS"
export QFORGE=${QFORGE:-build-gpu/qforge} PYTHON=${PYTHON:-python3} DEVICE=cuda
export MODEL=llama SIZE=${LENGTH:-2048} ROWS=${SEQUENCES:-512} BATCH=${BATCH:-4} REPEAT=${REPEAT:-1}
export WORK=${WORK:-out/bench/gptq-llama}
GPUS=$(nvidia-smi -L | grep -c '^GPU ')
if [ -z "${RANKS:-}" ]; then
  for n in 1 2 4 8; do [ "$n" -le "$GPUS" ] && RANKS="${RANKS:-} $n"; done
fi
export RANKS
source jobs/benchmarks/bench_common.sh
cat > "$WORK/gptq.yaml" <<YAML
model: {path: $WORK/llama.pt}
calibration_inputs: {files: [$WORK/llama_calibration.h5], batch_size: $BATCH}
deployment_settings: {target: libtorch, onnx: false}
quantization_settings:
  weights: {bits: 4, granularity: group, group_size: 128, algorithm: gptq}
  activations: {enabled: false}
layer_quantization_settings: {embed: {skip: true}}
YAML
out=$RESULTS/gptq_llama.md
{
  echo "GPTQ, 1.1B-parameter Llama-architecture decoder, $ROWS sequences of $SIZE tokens, batch $BATCH per rank"
  machine_lines
  echo
  echo "| GPUs | GPTQ s | compile s | efficiency | peak GPU memory |"
  echo "| --- | --- | --- | --- | --- |"
} > "$out"
first=""
for n in $RANKS; do
  for r in $(seq "$REPEAT"); do
    start=$(date +%s.%N)
    mpirun -np "$n" --oversubscribe "$QFORGE" compile "$WORK/gptq.yaml" --set out_dir="$WORK/r$n-$r" \
      --set device=cuda > "$WORK/r$n-$r.log" 2>&1 || { tail -30 "$WORK/r$n-$r.log"; exit 1; }
    "$PY" -c "print($(date +%s.%N) - $start)" > "$WORK/r$n-$r.wall"
  done
  row=$("$PY" - "$n" "${first:-0}" "$WORK" "$REPEAT" <<'PY'
import json, statistics, sys
n, first, work, repeat = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
gptq, wall, peak = [], [], 0
for r in range(1, repeat + 1):
    phases = json.load(open(f"{work}/r{n}-{r}/report.json"))["phases"]
    gptq.append(sum(max(p["seconds_per_rank"]) for p in phases if p["phase"].startswith("gptq")))
    wall.append(float(open(f"{work}/r{n}-{r}.wall").read()))
    peak = max([peak] + [max(p.get("peak_bytes_per_rank", [0])) for p in phases])
t = statistics.median(gptq)
eff = f"{100 * first / (n * t):.0f}%" if first else "-"
print(f"{t:.1f} | {n} | {eff} | {peak / 2**30:.1f} GiB | {statistics.median(wall):.1f}")
PY
)
  IFS='|' read -r t _ eff peak wall <<< "$row"
  first=${first:-$(echo "$t" | xargs)}
  echo "| $n | $(echo $t) | $(echo $wall) | $(echo $eff) | $(echo $peak) |" >> "$out"
  tail -1 "$out"
done
grep -h "block inputs kept" "$WORK"/r*-1.log | head -2 >> "$out" || true
