#!/usr/bin/env bash
# Held-out perplexity of the fortunes language model (jobs/examples/fortunes) pruned
# to 50% unstructured and 2:4 by magnitude, Wanda and SparseGPT (docs/pruning.md), one
# shot and recovered by QA-LoRA (8-bit weights per channel, distilled from the dense
# model; 2:4 by each method, 50% by magnitude and Wanda), and SparseGPT 2:4 with GPTQ's
# 4-bit weights in groups of 32 next to dense GPTQ, 2 ranks (REUSE=1: keep the compiles
# already made). The
# output layer and the embeddings stay dense, as the methods' papers compare.
# Writes a markdown table: perplexity, its change against the dense float model, and
# whether the goals docs/pruning.md states hold.
# Usage: bash jobs/benchmarks/bench_pruning.sh BUILD_DIR [RESULTS.md]
#   LM="NAME DIR ARGS...", RANKS, DEVICE: as bench_weight_algorithms.sh (the 6x384 decoder:
#   LM="fortunes-6x384 out/fortunes384 3000 --width 384 --depth 6 --heads 6 --lr 1e-3 --device cuda").
set -euo pipefail
BUILD=$(cd "$1" && pwd)
BENCH=bench_pruning
RESULTS=${2:-$BUILD/$BENCH.md}
FIXED_SETS=('layer_quantization_settings[head].pruning.enabled=false')
source "$(dirname "$0")/bench_fortunes_common.sh"

P=pruning_settings
W=quantization_settings.weights
W8=("$W.bits=8" "$W.granularity=channel")
# One shot, then recovered: 2:4 by each method (the target), 50% by magnitude and Wanda.
for method in magnitude wanda sparsegpt; do
  compile "$method-50%" quantization_settings=null "$P.method=$method" "$P.sparsity=0.5"
  compile "$method-2of4" quantization_settings=null "$P.method=$method" "$P.pattern=2:4"
done
for method in magnitude wanda sparsegpt; do
  compile "$method-2of4-w8-qalora" "$P.method=$method" "$P.pattern=2:4" "${W8[@]}" compile_options.fine_tune.enabled=true
done
compile dense-w4-g32-gptq "$P.sparsity=0" "$W.algorithm=gptq"
compile sparsegpt-2of4-w4-g32-gptq "$P.method=sparsegpt" "$P.pattern=2:4" "$W.algorithm=gptq"
for method in magnitude wanda; do
  compile "$method-50%-w8-qalora" "$P.method=$method" "$P.sparsity=0.5" "${W8[@]}" compile_options.fine_tune.enabled=true
done

"$PY" "$SOURCE/jobs/benchmarks/pruning_table.py" "$WORK" "$RESULTS" "$COMMIT" "$LM_NAME $RANKS $MACHINE" "${rows[@]}"
