#!/usr/bin/env bash
# What keeping each block's inputs saves sequential GPTQ: the same decoder
# (jobs/benchmarks/bench_gptq_kept_inputs.py) with its blocks where qforge
# cuts the method (kept inputs: three passes over each block) and inside a
# run-time branch (each block's inputs computed from the model's inputs again:
# two passes over the whole model). Median GPTQ seconds (the gptq
# phases) of REPEAT runs each, and the peak memory.
# Usage: bash jobs/benchmarks/bench_gptq_kept_inputs.sh BUILD_DIR [RESULTS.md]
#   DEPTH (8) WIDTH (256) ROWS (32) LENGTH (256) BATCH (8) REPEAT (3) DEVICE (cpu)
set -euo pipefail
SOURCE=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "$1" && pwd)
RESULTS=${2:-$BUILD/bench_gptq_kept_inputs.md}
PY=${QFORGE_PYTHON:-/usr/bin/python3}
DEPTH=${DEPTH:-8} WIDTH=${WIDTH:-256} ROWS=${ROWS:-32} LENGTH=${LENGTH:-256} BATCH=${BATCH:-8}
REPEAT=${REPEAT:-3} DEVICE=${DEVICE:-cpu}
WORK=$BUILD/bench_gptq_kept_inputs/${DEPTH}x$WIDTH-$ROWS
mkdir -p "$WORK"
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
[ -f "$WORK/ids.h5" ] || "$PY" "$SOURCE/jobs/benchmarks/bench_gptq_kept_inputs.py" "$WORK" "$DEPTH" "$WIDTH" "$ROWS" "$LENGTH"
for model in llama branched; do
  cat > "$WORK/$model.yaml" <<YAML
model: {path: $WORK/$model.pt}
calibration_inputs: {files: [$WORK/ids.h5], batch_size: $BATCH}
deployment_settings: {target: libtorch, onnx: false}
device: $DEVICE
quantization_settings:
  weights: {bits: 4, granularity: group, group_size: 64, algorithm: gptq}
  activations: {enabled: false}
layer_quantization_settings: {embed: {skip: true}}
YAML
  for r in $(seq "$REPEAT"); do
    "$BUILD/qforge" compile "$WORK/$model.yaml" --set out_dir="$WORK/$model-$r" > "$WORK/$model-$r.log" 2>&1 ||
      { tail -30 "$WORK/$model-$r.log"; exit 1; }
  done
done
COMMIT=$(git -C "$SOURCE" rev-parse --short HEAD 2>/dev/null || echo "no git")
MACHINE="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
[ "$DEVICE" = cuda ] && MACHINE="$MACHINE; $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
"$PY" - "$WORK" "$REPEAT" "$RESULTS" "$DEPTH blocks of width $WIDTH, $ROWS sequences of $LENGTH tokens, batch $BATCH, 1 rank on $DEVICE ($MACHINE), $COMMIT" <<'PY'
import json, statistics, sys
work, repeat, results, title = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
lines = [f"GPTQ with and without kept block inputs: {title}", "",
         "| block inputs | GPTQ s (median) | runs | peak memory |", "| --- | --- | --- | --- |"]
rows = {}
for model, label in (("llama", "kept"), ("branched", "computed again")):
    seconds, peak = [], 0
    for r in range(1, repeat + 1):
        phases = json.load(open(f"{work}/{model}-{r}/report.json"))["phases"]
        seconds.append(sum(max(p["seconds_per_rank"]) for p in phases if p["phase"].startswith("gptq")))
        peak = max([peak] + [max(p["peak_bytes_per_rank"]) for p in phases if p["phase"].startswith("gptq")])
    rows[model] = statistics.median(seconds)
    runs = ", ".join(f"{s:.1f}" for s in seconds)
    lines.append(f"| {label} | {rows[model]:.1f} | {runs} | {peak / 2**20:.0f} MiB |")
lines += ["", f"Kept inputs: {rows['branched'] / rows['llama']:.2f}x faster."]
open(results, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
