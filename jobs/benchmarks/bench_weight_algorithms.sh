#!/usr/bin/env bash
# Held-out perplexity of the fortunes language model (3 blocks of width 128,
# jobs/examples/fortunes) with low-bit weights, 2 ranks: round-to-nearest
# against GPTQ and AWQ (token and position embeddings kept in floating point,
# as the methods' peers compare: both work on Linear layers), each followed by
# QA-LoRA; and W8A8 round-to-nearest against SmoothQuant.
# Writes a markdown table (perplexity and its change against float).
# Usage: bash jobs/benchmarks/bench_weight_algorithms.sh BUILD_DIR [RESULTS.md]
#   LM="NAME DIR ARGS...": another model, trained once into DIR by make_fortunes_lm.py with ARGS
#   (the larger decoder: LM="fortunes-6x384 out/fortunes384 3000 --width 384 --depth 6 --heads 6
#   --lr 1e-3 --device cuda"); RANKS (default 2) and DEVICE (default cpu) of the compiles.
set -euo pipefail
BUILD=$(cd "$1" && pwd)
BENCH=bench_weight_algorithms
RESULTS=${2:-$BUILD/$BENCH.md}
# The embeddings float: both methods work on Linear layers.
FIXED_SETS=('layer_quantization_settings[tokens].skip=true' 'layer_quantization_settings[positions].skip=true')
source "$(dirname "$0")/bench_fortunes_common.sh"

W=quantization_settings.weights
for scheme in "4 g128" "4 g32" "4 channel" "3 g64"; do
  set -- $scheme
  bits=$1 granularity=$2 group=128
  case $granularity in g*) group=${granularity#g}; granularity=group ;; esac
  for algorithm in rtn gptq awq; do
    compile "w$bits-$2-$algorithm" $W.bits="$bits" $W.granularity="$granularity" $W.group_size="$group" \
      $W.algorithm="$algorithm"
  done
done
for algorithm in gptq awq; do
  compile "w4-g32-$algorithm-qalora" $W.bits=4 $W.granularity=group $W.group_size=32 $W.algorithm="$algorithm" \
    compile_options.fine_tune.enabled=true
done
# W8A8: 8-bit weights per channel, 8-bit activations per tensor (onnxruntime's preset).
A=quantization_settings.activations
for alpha in none 0.5 0.8; do
  smoothing=()
  [ "$alpha" != none ] && smoothing=($A.smoothing.method=smoothquant $A.smoothing.alpha="$alpha")
  name=w8a8-smoothquant-$alpha
  [ "$alpha" = none ] && name=w8a8-rtn
  compile "$name" deployment_settings.target=onnxruntime $W.bits=8 $W.granularity=channel \
    $A.enabled=true $A.bits=8 "${smoothing[@]}"
done

"$PY" - "$WORK" "$RESULTS" "$COMMIT" "$LM_NAME $RANKS $MACHINE" "${rows[@]}" <<'PY'
import json, platform, sys
work, results, commit, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[5:]
model, ranks, machine = sys.argv[4].split(" ", 2)
lines = [f"Fortunes LM ({model}), held-out perplexity, {ranks} rank(s) on {platform.node()} ({machine}), {commit}; "
         "`bash jobs/benchmarks/bench_weight_algorithms.sh build`", "",
         "| weights | float | compiled | change |", "| --- | --- | --- | --- |"]
for name in names:
    e = json.load(open(f"{work}/{name}/report.json"))["evaluation"]
    fp, q = e["float_perplexity"], e["compiled_perplexity"]
    lines.append(f"| {name} | {fp:.3f} | {q:.3f} | {100 * (q / fp - 1):+.2f}% |")
open(results, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
