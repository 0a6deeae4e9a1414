#!/usr/bin/env bash
# Held-out perplexity of the fortunes language model (3 blocks of width 128,
# jobs/examples/fortunes) with low-bit weights: round-to-nearest against GPTQ,
# with and without act_order, and each followed by QA-LoRA; 2 ranks. Every
# layer quantized, then again with the two embeddings kept in floating point
# (GPTQ solves Linear layers only, and peers compare with embeddings float).
# Writes a markdown table (perplexity and its change against float).
# Usage: bash jobs/benchmarks/bench_gptq_quality.sh BUILD_DIR [RESULTS.md]
set -euo pipefail
SOURCE=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "$1" && pwd)
RESULTS=${2:-$BUILD/bench_gptq_quality.md}
PY=${QFORGE_PYTHON:-/usr/bin/python3}
DATA=$BUILD/fortunes
WORK=$BUILD/bench_gptq_quality
mkdir -p "$WORK"
"$PY" "$SOURCE/jobs/examples/fortunes/make_fortunes_lm.py" "$DATA" 1000  # trains once (as the test does)
sed "s|fortunes/|$DATA/|" "$SOURCE/configs/fortunes_w4_qalora.yaml" > "$WORK/experiment.yaml"
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}

# compile NAME BITS GRANULARITY ALGORITHM ACT_ORDER FINE_TUNE [EMBEDDINGS: quantized | float]
compile() {
  local name=$1 bits=$2 granularity=$3 algorithm=$4 act_order=$5 tune=$6 embeddings=${7:-quantized} group=128
  local skip=()
  case $granularity in g*) group=${granularity#g}; granularity=group ;; esac
  [ "$embeddings" = float ] && skip=(--set 'layer_quantization_settings[tokens].skip=true'
                                     --set 'layer_quantization_settings[positions].skip=true')
  ${MPIEXEC:-mpirun} -np 2 --oversubscribe "$BUILD/qforge" compile "$WORK/experiment.yaml" \
    --set out_dir="$WORK/$name" --set graph_name="$name" --set deployment_settings.onnx=false \
    --set quantization_settings.weights.bits="$bits" --set quantization_settings.weights.granularity="$granularity" \
    --set quantization_settings.weights.group_size="$group" --set quantization_settings.weights.algorithm="$algorithm" \
    --set quantization_settings.weights.gptq.act_order="$act_order" \
    --set compile_options.fine_tune.enabled="$tune" --set compile_options.fine_tune.eval_every=0 "${skip[@]}" \
    > "$WORK/$name.log" 2>&1 || { tail -30 "$WORK/$name.log"; exit 1; }
}

rows=()
for scheme in "4 g128" "4 g32" "4 channel" "3 g64"; do
  set -- $scheme
  tag="w$1-$2"
  compile "$tag-rtn" "$1" "$2" rtn false false
  compile "$tag-gptq" "$1" "$2" gptq false false
  compile "$tag-gptq-act-order" "$1" "$2" gptq true false
  rows+=("$tag-rtn" "$tag-gptq" "$tag-gptq-act-order")
done
compile w4-g32-rtn-qalora 4 g32 rtn false true
compile w4-g32-gptq-qalora 4 g32 gptq false true
rows+=(w4-g32-rtn-qalora w4-g32-gptq-qalora)
for scheme in "4 g128" "4 g32" "4 channel" "3 g64"; do
  set -- $scheme
  tag="w$1-$2-embeddings-float"
  compile "$tag-rtn" "$1" "$2" rtn false false float
  compile "$tag-gptq" "$1" "$2" gptq false false float
  compile "$tag-gptq-act-order" "$1" "$2" gptq true false float
  rows+=("$tag-rtn" "$tag-gptq" "$tag-gptq-act-order")
done
compile w4-g32-embeddings-float-gptq-qalora 4 g32 gptq false true float
rows+=(w4-g32-embeddings-float-gptq-qalora)

"$PY" - "$WORK" "$RESULTS" "${rows[@]}" <<'PY'
import json, platform, subprocess, sys
work, results, names = sys.argv[1], sys.argv[2], sys.argv[3:]
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True,
                     text=True).stdout.strip()
lines = [f"Fortunes LM, held-out perplexity, 2 ranks on {platform.node()} ({cpu}); "
         "`bash jobs/benchmarks/bench_gptq_quality.sh build`", "",
         "| weights | float | compiled | change |", "| --- | --- | --- | --- |"]
for name in names:
    e = json.load(open(f"{work}/{name}/report.json"))["evaluation"]
    fp, q = e["float_perplexity"], e["compiled_perplexity"]
    lines.append(f"| {name} | {fp:.3f} | {q:.3f} | {100 * (q / fp - 1):+.2f}% |")
open(results, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
