#!/usr/bin/env bash
# Structured pruning's accuracy: the quickstart's MNIST CNN (jobs/quickstart.sh makes mnist/)
# with 30% and 50% of every channel group's channels removed (configs/mnist_structured.yaml),
# in floating point, to INT8 (onnxruntime preset), and to INT8 recovered by QA-LoRA
# distillation from the dense model; the dense INT8 compile beside them. 2 ranks. Prints
# jobs/examples/mnist/accuracy_table.py's table (held-out top-1 of the dense float model and of
# each compiled model, sizes, the ONNX file's top-1) and writes it to RESULTS_DIR/mnist.md.
# Usage: bash jobs/benchmarks/bench_structured_mnist.sh [RESULTS_DIR]   (after jobs/quickstart.sh)
#   IMPORTANCE: the pruned compiles' pruning_settings.importance (default: the config's, activation).
set -euo pipefail
cd "$(dirname "$0")/../.."
RESULTS=${1:-bench_results/structured-mnist-$(hostname -s)-$(date -u +%Y-%m-%dT%H%MZ)}
OUT=${WORK:-out/bench/structured-mnist}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
[ -f mnist/mnist_cnn.pt ] || { echo "bench_structured_mnist: no mnist/mnist_cnn.pt (run jobs/quickstart.sh)" >&2; exit 2; }
mkdir -p "$RESULTS"
compile() {  # NAME SETTINGS...
  local name=$1; shift
  mpirun -np 2 --oversubscribe build/qforge compile configs/mnist_structured.yaml --set out_dir="$OUT/$name" \
    --set graph_name="$name" "$@" > "$OUT.$name.log" 2>&1 || { tail -20 "$OUT.$name.log"; exit 1; }
  reports+=("$OUT/$name/report.json")
}
reports=()
mkdir -p "$OUT"
compile dense_int8 --set pruning_settings=null --set compile_options.fine_tune.enabled=false
for s in 0.3 0.5; do
  pct=${s#0.}0
  prune=(--set pruning_settings.sparsity=$s ${IMPORTANCE:+--set pruning_settings.importance=$IMPORTANCE})
  compile "pruned${pct}_float" "${prune[@]}" --set quantization_settings=null --set compile_options.fine_tune.enabled=false
  compile "pruned${pct}_int8" "${prune[@]}" --set compile_options.fine_tune.enabled=false
  compile "pruned${pct}_int8_qalora" "${prune[@]}"
done
{
  echo "MNIST CNN, 2,000 held-out digits; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), 2 ranks;"
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); importance ${IMPORTANCE:-activation}. Parameters: dense 105,962."
  echo '```'
  /usr/bin/python3 jobs/examples/mnist/accuracy_table.py "${reports[@]}"
  echo '```'
  for r in "${reports[@]}"; do
    /usr/bin/python3 -c "import json,sys; r=json.load(open(sys.argv[1])); s=r.get('structured_pruning');
print(r['graph_name'] + ': ' + (f\"{s['parameters']:,} parameters\" if s else 'dense'))" "$r"
  done
} | tee "$RESULTS/mnist.md"
