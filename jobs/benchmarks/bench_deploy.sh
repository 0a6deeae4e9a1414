#!/usr/bin/env bash
# Deployed speed of qforge's ONNX export on the CPU: for each model in MODELS, compile on 1 rank
# for the onnxruntime target (its default preset: weights int8 symmetric per channel,
# activations uint8 asymmetric per tensor, QDQ) into <out>/model.qforge.onnx, export the float
# model (`qforge export <out> --float -o <out>/float.onnx`), and time both in ONNX Runtime:
# latency at batch 1 (median and p90 of LAT_RUNS runs) and throughput at batch TPUT_BATCH
# (median of TPUT_RUNS runs, items/s), on random inputs. Writes results.md, results.json and
# raw/ (each timing's JSON line) to RESULTS_DIR, default bench_results/deploy-<host>-<date>.
#
# Models: torchvision classifiers (resnet18, resnet50, mobilenet_v2, ...: random weights,
# SIZE x SIZE images, jobs/benchmarks/bench_assets.py), `fortunes` (the character language model of
# jobs/examples/fortunes/make_fortunes_lm.py: 64 tokens, found in FORTUNES_DIR, fortunes/, build/fortunes/
# or build-gpu/fortunes/, else trained into fortunes/, about 5 minutes on 2 cores; skipped without
# Debian's `fortunes` package) and `decoder` (jobs/benchmarks/bench_assets.py's 134M decoder, context
# DECODER_CONTEXT). Calibration: ROWS rows (random images; fortunes' own calibration text).
#
# Timing runs through node + onnxruntime-node (jobs/benchmarks/bench_deploy_ort.js) where
# `node -e "require('onnxruntime-node')"` works here, else Python's onnxruntime
# (jobs/benchmarks/bench_deploy_ort.py; ORT_PYTHON, PYTHON, python3, /usr/bin/python3 tried in order).
# RUNNER=node or RUNNER=python forces one.
#
# Usage: bash jobs/benchmarks/bench_deploy.sh [RESULTS_DIR]   (after jobs/setup.sh or a build in build/)
#   MODELS="resnet18 resnet50 mobilenet_v2 fortunes"  THREADS=<all cores: nproc>  SIZE=224  ROWS=64
#   LAT_RUNS=50 LAT_WARMUP=10  TPUT_BATCH=32 TPUT_RUNS=10 TPUT_WARMUP=3
#   QFORGE=build/qforge (build-gpu/qforge where only that one is built)
#   PYTHON=/usr/bin/python3 (makes the models: torch, torchvision, h5py; python3 where that has no torch)
#   DEVICE= (compile's device, default qforge's)
#   WORK=out/bench/deploy-work (models, calibration data, compiled artifacts; reused when present)
#   ASSETS_WORK=$WORK (where the models and calibration data are made; shared by several WORKs)
#   PRUNING= (pruning_settings of every compile, a YAML mapping: "{method: structured, sparsity: 0.5}")
set -euo pipefail
cd "$(dirname "$0")/../.."
QFORGE=${QFORGE:-build/qforge}
[ -x "$QFORGE" ] || [ ! -x build-gpu/qforge ] || QFORGE=build-gpu/qforge  # jobs/gpu_build_and_test.sh's build
# Makes the models (torch, torchvision, h5py): Debian's python3 here, the python3 on PATH where
# Debian's has no torch (the GPU machine's venv).
PY=${PYTHON:-/usr/bin/python3}
if [ -z "${PYTHON:-}" ] && ! /usr/bin/python3 -c "import torch" > /dev/null 2>&1; then PY=python3; fi
MODELS=${MODELS:-"resnet18 resnet50 mobilenet_v2 fortunes"}
THREADS=${THREADS:-$(nproc)}
SIZE=${SIZE:-224}
ROWS=${ROWS:-64}
CAL_BATCH=${CAL_BATCH:-16}
DECODER_CONTEXT=${DECODER_CONTEXT:-256}
LAT_RUNS=${LAT_RUNS:-50} LAT_WARMUP=${LAT_WARMUP:-10}
TPUT_BATCH=${TPUT_BATCH:-32} TPUT_RUNS=${TPUT_RUNS:-10} TPUT_WARMUP=${TPUT_WARMUP:-3}
WORK=${WORK:-out/bench/deploy-work}
STARTED=$(date -u +%Y-%m-%dT%H:%MZ)
RESULTS=${1:-bench_results/deploy-$(hostname -s)-$(date -u +%Y-%m-%dT%H%MZ)}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

if [ "$LAT_RUNS" -lt 20 ] || [ "$TPUT_RUNS" -lt 5 ]; then
  echo "bench_deploy: LAT_RUNS must be >= 20 and TPUT_RUNS >= 5 (got $LAT_RUNS and $TPUT_RUNS)" >&2; exit 2
fi
[ -x "$QFORGE" ] || { echo "bench_deploy: no qforge at $QFORGE (build first, or set QFORGE)" >&2; exit 2; }

# The timing runner.
if [ "${RUNNER:-}" != python ] && command -v node > /dev/null && node -e "require('onnxruntime-node')" > /dev/null 2>&1; then
  RUN=(node jobs/benchmarks/bench_deploy_ort.js) RUNNER=onnxruntime-node
elif [ "${RUNNER:-}" = node ]; then
  echo "bench_deploy: RUNNER=node, but node cannot load onnxruntime-node here (npm install onnxruntime-node)" >&2; exit 2
else
  ORT_PY=
  for candidate in ${ORT_PYTHON:-} "$PY" python3 /usr/bin/python3; do
    if command -v "$candidate" > /dev/null && "$candidate" -c "import onnxruntime" > /dev/null 2>&1; then
      ORT_PY=$candidate; break
    fi
  done
  [ -n "$ORT_PY" ] || { echo "bench_deploy: neither node with onnxruntime-node nor a python3 with onnxruntime" >&2; exit 2; }
  RUN=("$ORT_PY" jobs/benchmarks/bench_deploy_ort.py) RUNNER="python onnxruntime ($ORT_PY)"
fi
TABLE_PY=${ORT_PY:-$(command -v "$PY" || command -v python3)}

mkdir -p "$RESULTS/raw" "$WORK"
rm -f "$RESULTS"/raw/*.json "$RESULTS"/raw/*.failed  # a reused RESULTS_DIR keeps no earlier run's rows
echo "bench_deploy: writing to $RESULTS (timing with ${RUN[*]}, $THREADS threads)"

# prepare MODEL: makes the model and its calibration data; sets MODEL_PT, CAL_H5, UNIT, SOURCE, RUN_ARGS.
prepare() {
  local name=$1 dir
  case $name in
    fortunes)
      dir=${FORTUNES_DIR:-}
      if [ -z "$dir" ]; then
        for d in fortunes build/fortunes build-gpu/fortunes; do
          if [ -f "$d/fortunes_lm.pt" ] && [ -f "$d/calibration.h5" ]; then dir=$d; break; fi
        done
      fi
      dir=${dir:-fortunes}
      if [ ! -f "$dir/fortunes_lm.pt" ] || [ ! -f "$dir/calibration.h5" ]; then
        echo "== fortunes: training the language model into $dir (about 5 minutes on 2 cores)"
        "$PY" jobs/examples/fortunes/make_fortunes_lm.py "$dir" > "$WORK/fortunes_make.log" 2>&1 || return  # 77: no fortunes package
      fi
      MODEL_PT=$dir/fortunes_lm.pt CAL_H5=$dir/calibration.h5 UNIT=sequences
      SOURCE="character LM trained on Debian's fortunes (jobs/examples/fortunes/make_fortunes_lm.py), 64 tokens"
      RUN_ARGS=(--dims '*=64' --int-range 0:128) ;;
    decoder)
      dir=${ASSETS_WORK:-$WORK}/assets-decoder-$DECODER_CONTEXT
      [ -f "$dir/decoder_calibration.h5" ] || "$PY" jobs/benchmarks/bench_assets.py "$dir" decoder "$ROWS" "$DECODER_CONTEXT" \
        > "$WORK/decoder_assets.log" 2>&1 || return
      MODEL_PT=$dir/decoder.pt CAL_H5=$dir/decoder_calibration.h5 UNIT=sequences
      SOURCE="jobs/benchmarks/bench_assets.py decoder (134M, random weights), $DECODER_CONTEXT tokens"
      RUN_ARGS=(--dims "*=$DECODER_CONTEXT" --int-range 0:32000) ;;
    *)
      dir=${ASSETS_WORK:-$WORK}/assets-$SIZE
      [ -f "$dir/${name}_calibration.h5" ] || "$PY" jobs/benchmarks/bench_assets.py "$dir" "$name" "$ROWS" "$SIZE" \
        > "$WORK/${name}_assets.log" 2>&1 || return
      MODEL_PT=$dir/$name.pt CAL_H5=$dir/${name}_calibration.h5 UNIT=images
      SOURCE="torchvision $name (random weights), 3x${SIZE}x$SIZE images"
      RUN_ARGS=() ;;
  esac
}

# bench MODEL: compile, export, time. Every step checks its own status (set -e does not apply in
# a function called from `||`).
bench() {
  local name=$1 out=$WORK/$1 status fmt file batch runs warmup
  prepare "$name" || { status=$?; [ "$status" = 77 ] && echo "skipped: Debian's fortunes package is not installed" \
    > "$RESULTS/raw/$name.failed" || echo "making the model failed (exit $status; $WORK/${name}_*.log)" \
    > "$RESULTS/raw/$name.failed"; return 1; }
  printf '{"unit": "%s", "source": "%s", "calibration_rows": %s}\n' "$UNIT" "$SOURCE" "$ROWS" > "$RESULTS/raw/$name.info.json"
  # Two traced batch sizes make axis 0 dynamic (tracing_inputs.batch_sizes), so one file serves batch 1 and 32.
  cat > "$WORK/$name.yaml" <<YAML
model: {path: $MODEL_PT}
graph_name: $name
out_dir: $out
tracing_inputs: {batch_sizes: [1, 2]}
calibration_inputs: {files: [$CAL_H5], batch_size: $CAL_BATCH, max_samples: $ROWS}
deployment_settings: {target: onnxruntime}
quantization_settings: {}
${PRUNING:+pruning_settings: $PRUNING}
YAML
  local device=(); [ -n "${DEVICE:-}" ] && device=(--set "device=$DEVICE")
  echo "== $name: compile (1 rank, onnxruntime preset), export float"
  rm -f "$out/model.qforge.onnx" "$out/float.onnx"  # never time a previous run's files
  if ! "$QFORGE" compile "$WORK/$name.yaml" "${device[@]}" > "$WORK/$name.compile.log" 2>&1; then
    tail -20 "$WORK/$name.compile.log"; echo "qforge compile failed ($WORK/$name.compile.log)" > "$RESULTS/raw/$name.failed"; return 1
  fi
  if [ ! -f "$out/model.qforge.onnx" ]; then
    echo "qforge compile wrote no $out/model.qforge.onnx" | tee "$RESULTS/raw/$name.failed"; return 1
  fi
  if ! "$QFORGE" export "$out" --float -o "$out/float.onnx" > "$WORK/$name.export.log" 2>&1; then
    tail -20 "$WORK/$name.export.log"; echo "qforge export --float failed ($WORK/$name.export.log)" > "$RESULTS/raw/$name.failed"; return 1
  fi
  for fmt in float int8; do
    file=$out/float.onnx; [ "$fmt" = int8 ] && file=$out/model.qforge.onnx
    for batch in 1 "$TPUT_BATCH"; do
      runs=$LAT_RUNS warmup=$LAT_WARMUP
      [ "$batch" = 1 ] || { runs=$TPUT_RUNS warmup=$TPUT_WARMUP; }
      if ! "${RUN[@]}" "$file" --batch "$batch" --runs "$runs" --warmup "$warmup" --threads "$THREADS" "${RUN_ARGS[@]}" \
          > "$RESULTS/raw/$name.$fmt.b$batch.json" 2> "$WORK/$name.$fmt.b$batch.err"; then
        cat "$WORK/$name.$fmt.b$batch.err"
        echo "timing $fmt at batch $batch failed: $(tail -1 "$WORK/$name.$fmt.b$batch.err")" > "$RESULTS/raw/$name.failed"
        rm -f "$RESULTS/raw/$name.$fmt.b$batch.json"; return 1
      fi
      echo "   $fmt batch $batch: median $(sed -n 's/.*"median_ms": *\([0-9.]*\).*/\1/p' "$RESULTS/raw/$name.$fmt.b$batch.json") ms"
    done
  done
}

failed=()
for m in $MODELS; do
  bench "$m" || { failed+=("$m"); echo "== $m: $(cat "$RESULTS/raw/$m.failed" 2> /dev/null)"; }
done

QFORGE_VERSION=$("$QFORGE" --version 2> /dev/null | tr '\n' ' ' | xargs || true)
GIT_COMMIT=unknown
if git rev-parse --git-dir > /dev/null 2>&1; then
  GIT_COMMIT=$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo '+uncommitted changes')
fi
export MODELS THREADS TPUT_BATCH STARTED RUNNER QFORGE_VERSION GIT_COMMIT
"$TABLE_PY" jobs/benchmarks/bench_deploy_table.py "$RESULTS"
echo
echo "bench_deploy: wrote $RESULTS/results.md, $RESULTS/results.json and $RESULTS/raw/"
if [ ${#failed[@]} -gt 0 ]; then echo "bench_deploy: no complete result for: ${failed[*]}" >&2; exit 1; fi
