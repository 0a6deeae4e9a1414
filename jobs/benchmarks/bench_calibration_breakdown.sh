#!/usr/bin/env bash
# Where one device's calibration time goes, part by part (reading, checking,
# copying, forward, min/max observers, histogram observers), against plain
# inference of the same model and PyTorch's torch.ao observers in hooks, for
# each of MODELS (default "resnet50 decoder": the GPU table of BENCHMARKS.md;
# "resnet18" fits the dev machine). Needs a build with -DQFORGE_BUILD_BENCHMARKS=ON.
# Usage: bash jobs/benchmarks/bench_calibration_breakdown.sh RESULTS_DIR
#   BUILD (default build-gpu), DEVICE (cuda|cpu), REPEATS (default 5), WORK.
set -euo pipefail
cd "$(dirname "$0")/../.."
RESULTS=${1:-out/bench/breakdown}
BUILD=${BUILD:-build-gpu} DEVICE=${DEVICE:-cuda} REPEATS=${REPEATS:-5}
WORK=${WORK:-out/bench/gpu-work} PY=${PYTHON:-python3}
MODELS=${MODELS:-"resnet50 decoder"}
mkdir -p "$RESULTS" "$WORK"
# name, size, calibration rows, batch (the workloads of jobs/benchmarks/bench_gpu.sh)
WORKLOADS=("resnet50 224 2048 64" "decoder 256 1024 16" "resnet18 64 512 32")
for w in "${WORKLOADS[@]}"; do
  read -r MODEL SIZE ROWS BATCH <<< "$w"
  case " $MODELS " in *" $MODEL "*) ;; *) continue ;; esac
  [ -f "$WORK/${MODEL}_calibration.h5" ] || "$PY" jobs/benchmarks/bench_assets.py "$WORK" "$MODEL" "$ROWS" "$SIZE"
  out="$RESULTS/breakdown_$MODEL.md"
  {
    echo "# Calibration, part by part: $MODEL"
    echo
    echo "- machine: $(hostname), $(nproc) cores; $( [ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name --format=csv,noheader | head -1 || echo CPU)"
    echo "- qforge $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%Y-%m-%dT%H:%MZ)"
    "$BUILD/qforge_bench_calibration_breakdown" "$WORK/$MODEL.pt" "$WORK/${MODEL}_calibration.h5" "$BATCH" "$DEVICE" "$REPEATS"
    if [ "$DEVICE" = cuda ]; then
      echo
      "$PY" jobs/benchmarks/bench_calibration_pytorch.py "$WORK" "$MODEL" "$SIZE" "$BATCH" "$REPEATS"
    fi
  } > "$out"
  cat "$out"
done
