#!/usr/bin/env bash
# Calibration throughput of `qforge compile` on 1 and 2 ranks (or RANKS="1 2 4"):
# torchvision ResNet-18 (random weights), 512 random 3x64x64 images, TensorRT
# preset (percentile observer: a range pass and a histogram pass).
# Writes a Markdown table naming the machine to RESULTS (default out/bench/calibration.md).
# Usage: bash jobs/bench_calibration.sh [RESULTS]   (after jobs/setup.sh or a build in build/)
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${1:-out/bench/calibration.md}
QFORGE=${QFORGE:-build/qforge}
PY=${PYTHON:-/usr/bin/python3}
RANKS=${RANKS:-"1 2"}
REPEAT=${REPEAT:-3}   # runs per rank count; the table shows the median
WORK=out/bench/work
mkdir -p "$WORK" "$(dirname "$RESULTS")"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0

[ -f "$WORK/calibration.h5" ] || "$PY" jobs/bench_assets.py "$WORK" resnet18 512 64
cat > "$WORK/bench.yaml" <<YAML
model: {path: $WORK/resnet18.pt}
calibration_inputs: {files: [$WORK/calibration.h5], batch_size: 32}
deployment_settings: {target: tensorrt}
quantization_settings: {}
YAML

{
  echo "# Calibration throughput"
  echo
  echo "- machine: $(hostname), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "- $("$QFORGE" --version | head -3 | tr '\n' ' ')"
  echo "- model: torchvision resnet18 (random weights), 512 images 3x64x64, batch 32, TensorRT preset (2 passes)"
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- threads per rank: cores / ranks on the host (qforge's default without OMP_NUM_THREADS)"
  echo "- median of $REPEAT runs per row; calibration time = both passes, slowest rank"
  echo
  echo "| ranks | calibration s | samples/s (both passes) | speed-up | efficiency | runs (s) |"
  echo "| ---: | ---: | ---: | ---: | ---: | --- |"
} > "$RESULTS"
base=""
for n in $RANKS; do
  reports=()
  for r in $(seq "$REPEAT"); do
    out="$WORK/out$n-$r"
    mpirun -np "$n" --oversubscribe "$QFORGE" compile "$WORK/bench.yaml" --set out_dir="$out" > "$WORK/log$n-$r.txt" 2>&1
    reports+=("$out/report.json")
  done
  # Appends this row to RESULTS; prints the rate, the base of the next rows.
  rate=$("$PY" - "$n" "${base:-0}" "$RESULTS" "${reports[@]}" <<'PY'
import json, statistics, sys
ranks, base, results = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
runs = []
for path in sys.argv[4:]:
    phases = json.load(open(path))["phases"]
    runs.append(sum(max(p["seconds_per_rank"]) for p in phases if p["phase"].startswith("calibrate")))
seconds = statistics.median(runs)
rate = 512 * 2 / seconds
base = base or rate
with open(results, "a") as f:
    f.write(f"| {ranks} | {seconds:.2f} | {rate:.0f} | {rate / base:.2f}x | {100 * rate / base / ranks:.0f}% | "
            f"{', '.join(f'{r:.2f}' for r in runs)} |\n")
print(rate)
PY
)
  base=${base:-$rate}
done
cat "$RESULTS"
