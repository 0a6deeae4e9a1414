#!/usr/bin/env bash
# Collective traffic per phase, measured from report.json (`collectives`, `collective_bytes`):
# calibration with the TensorRT preset (min/max pass + histogram pass) and QA-LoRA steps (W4 per
# channel + A8, LoRA rank 8) of the GPU benchmark's workloads, ResNet-50 and the 134M decoder. Few
# rows on 2 CPU ranks are enough: the traffic depends neither on the rows nor on the device (one
# reduction per calibration pass, one gradient all-reduce per step), and a rank's payload is the
# same on any rank count. The input of the scaling model in BENCHMARKS.md.
# Usage: bash jobs/benchmarks/bench_traffic.sh [RESULTS.md]
set -euo pipefail
cd "$(dirname "$0")/../.."
RESULTS=${1:-out/bench/traffic.md}
WORK=${WORK:-out/bench/traffic-work}
QFORGE=${QFORGE:-build/qforge}
PY=${PYTHON:-/usr/bin/python3}
STEPS=${STEPS:-3}
mkdir -p "$WORK" "$(dirname "$RESULTS")"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

run() {  # MODEL SIZE BATCH
  local model=$1 size=$2 batch=$3
  [ -f "$WORK/${model}_calibration.h5" ] || "$PY" jobs/benchmarks/bench_assets.py "$WORK" "$model" 8 "$size" >&2
  cat > "$WORK/cal_$model.yaml" <<YAML
model: {path: $WORK/$model.pt}
calibration_inputs: {files: [$WORK/${model}_calibration.h5], batch_size: $batch}
deployment_settings: {target: tensorrt}
quantization_settings: {}
out_dir: $WORK/cal_$model
YAML
  cat > "$WORK/ft_$model.yaml" <<YAML
model: {path: $WORK/$model.pt}
calibration_inputs: {files: [$WORK/${model}_calibration.h5], batch_size: $batch}
deployment_settings: {target: libtorch}
quantization_settings:
  weights: {bits: 4, granularity: channel}
  activations: {bits: 8}
compile_options:
  fine_tune: {enabled: true, steps: $STEPS, batch_size: 2, lora_rank: 8, log_every: $STEPS}
out_dir: $WORK/ft_$model
YAML
  mpirun -np 2 --oversubscribe "$QFORGE" compile "$WORK/cal_$model.yaml" > "$WORK/cal_$model.log" 2>&1
  mpirun -np 2 --oversubscribe "$QFORGE" compile "$WORK/ft_$model.yaml" > "$WORK/ft_$model.log" 2>&1
}

run resnet50 224 4
run decoder 256 2
{
  echo "# Collective traffic per phase (bytes one rank contributes; measured, 2 ranks)"
  echo
  echo "- $("$QFORGE" --version | tr '\n' ' '), $(date -u +%Y-%m-%dT%H:%MZ), fine-tuning: $STEPS steps"
  echo
  "$PY" - "$WORK" "$STEPS" <<'PY'
import json, os, sys
work, steps = sys.argv[1], int(sys.argv[2])
print("| model | run | phase | collectives | bytes | bytes per call | bytes per step |")
print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
for model in ("resnet50", "decoder"):
    for run in ("cal", "ft"):
        report = json.load(open(os.path.join(work, f"{run}_{model}", "report.json")))
        for p in report["phases"]:
            if p["collectives"]:
                per_call = p["collective_bytes"] / p["collectives"]
                per_step = f"{p['collective_bytes'] / steps:,.0f}" if p["phase"] == "fine-tune" else ""
                print(f"| {model} | {'calibration' if run == 'cal' else 'QA-LoRA'} | {p['phase']} | "
                      f"{p['collectives']} | {p['collective_bytes']:,} | {per_call:,.0f} | {per_step} |")
PY
} > "$RESULTS"
cat "$RESULTS"
