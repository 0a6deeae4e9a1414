# Shared by the fortunes benchmarks (bench_weight_algorithms.sh, bench_pruning.sh), sourced
# with BUILD (the build directory), BENCH (the benchmark's name) and FIXED_SETS (settings of
# each of its compiles) set: the language model trained once, its experiment, the machine
# lines, and
#   compile NAME SETTING...   one compile on RANKS ranks into $WORK/NAME (no ONNX file, no
#                             fine-tuning unless a setting says so), added to `rows`; with REUSE=1
#                             a compile whose report.json is there is not run again.
# LM="NAME DIR ARGS...": another model, trained once into DIR by make_fortunes_lm.py with ARGS;
# RANKS (default 2) and DEVICE (default cpu) of the compiles.
SOURCE=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${QFORGE_PYTHON:-/usr/bin/python3}
RANKS=${RANKS:-2}
DEVICE=${DEVICE:-cpu}
read -r -a lm <<< "${LM:-fortunes-3x128 $BUILD/fortunes 1000}"  # 1000 steps: the test's model
LM_NAME=${lm[0]} DATA=${lm[1]}
WORK=$BUILD/$BENCH/$LM_NAME
mkdir -p "$WORK"
"$PY" "$SOURCE/jobs/examples/fortunes/make_fortunes_lm.py" "$DATA" "${lm[@]:2}"  # trains once
sed "s|fortunes/|$DATA/|" "$SOURCE/configs/fortunes_w4_qalora.yaml" > "$WORK/experiment.yaml"
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
COMMIT=$(git -C "$SOURCE" rev-parse --short HEAD 2>/dev/null || echo "no git")
MACHINE=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
[ "$DEVICE" = cuda ] && MACHINE="$MACHINE; $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), one per rank"
rows=()

compile() {
  local name=$1
  shift
  if [ -n "${REUSE:-}" ] && [ -f "$WORK/$name/report.json" ]; then
    rows+=("$name")
    return
  fi
  local sets=()
  for s in "${FIXED_SETS[@]}" "$@"; do sets+=(--set "$s"); done
  ${MPIEXEC:-mpirun} -np "$RANKS" --oversubscribe "$BUILD/qforge" compile "$WORK/experiment.yaml" \
    --set out_dir="$WORK/$name" --set graph_name="$name" --set deployment_settings.onnx=false --set device="$DEVICE" \
    --set compile_options.fine_tune.enabled=false --set compile_options.fine_tune.eval_every=0 "${sets[@]}" \
    > "$WORK/$name.log" 2>&1 || { tail -30 "$WORK/$name.log"; exit 1; }
  rows+=("$name")
}
