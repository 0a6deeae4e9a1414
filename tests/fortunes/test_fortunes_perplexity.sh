#!/usr/bin/env bash
# The language-model claim as a test: a small causal transformer trained on
# Debian's fortunes, compiled on 2 ranks to 4-bit weights. QA-LoRA must bring
# the held-out perplexity within 5% of the float model's, and below
# round-to-nearest's. Exit 77 (skipped) only when `fortunes` is not installed.
# Usage: test_fortunes_perplexity.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
SOURCE=$1 BUILD=$2
DATA=$BUILD/fortunes
PY=${QFORGE_PYTHON:-/usr/bin/python3}
# 1000 training steps (the example trains 1500): enough for the claims below,
# and a third less of the test command's longest test.
"$PY" "$SOURCE/jobs/examples/fortunes/make_fortunes_lm.py" "$DATA" 1000  # exits 77 without the package; trains once
sed "s|fortunes/|$DATA/|; s|out_dir: out/|out_dir: $BUILD/fortunes_out/|" "$SOURCE/configs/fortunes_w4_qalora.yaml" \
  > "$DATA/fortunes_w4_qalora.yaml"
cd "$BUILD"
run() {
  local name=$1; shift
  ${MPIEXEC:-mpirun} -np 2 --oversubscribe "$BUILD/qforge" compile "$DATA/fortunes_w4_qalora.yaml" \
    --set out_dir="$BUILD/fortunes_out/$name" "$@" > "$DATA/$name.log" 2>&1 || { tail -30 "$DATA/$name.log"; exit 1; }
}
run rtn --set compile_options.fine_tune.enabled=false --set graph_name=fortunes_lm_w4_rtn
run qalora
"$PY" "$SOURCE/jobs/examples/fortunes/perplexity_table.py" "$BUILD/fortunes_out/rtn/report.json" \
  "$BUILD/fortunes_out/qalora/report.json"
"$PY" - "$BUILD/fortunes_out/rtn/report.json" "$BUILD/fortunes_out/qalora/report.json" "$DATA/eval.h5" \
  "$BUILD/fortunes_out/qalora/model.qforge.pt" <<'PY'
import json, math, os, sys
import h5py, torch
rtn, qalora = (json.load(open(p)) for p in sys.argv[1:3])
# The compiled model loads in plain PyTorch and gives the perplexity the report states.
with h5py.File(sys.argv[3]) as f:
    ids, labels = torch.from_numpy(f["samples/all/ids"][:]), torch.from_numpy(f["samples/all/labels"][:])
model = torch.jit.load(sys.argv[4])
with torch.no_grad():
    nll = sum(torch.nn.functional.cross_entropy(model(ids[i:i + 128]).reshape(-1, 128).double(),
                                                labels[i:i + 128].reshape(-1), reduction="sum").item()
              for i in range(0, len(ids), 128))
ppl = math.exp(nll / labels.numel())
assert abs(ppl / qalora["evaluation"]["compiled_perplexity"] - 1) < 1e-4, (ppl, qalora["evaluation"])
fp = qalora["evaluation"]["float_perplexity"]
assert fp < 6, f"the float model is undertrained: perplexity {fp:.2f}"
assert rtn["evaluation"]["float_perplexity"] == fp, "both runs evaluate the same float model on the same text"
gap_rtn = rtn["evaluation"]["compiled_perplexity"] / fp - 1
gap = qalora["evaluation"]["compiled_perplexity"] / fp - 1
assert gap <= 0.05, f"W4 QA-LoRA perplexity is {100 * gap:.2f}% above float (target 5%)"
assert gap < gap_rtn, f"QA-LoRA ({100 * gap:.2f}%) does not improve on round-to-nearest ({100 * gap_rtn:.2f}%)"
steps = [e["step"] for e in qalora["fine_tune"]["evaluations"]]
assert steps == [100, 200], f"periodic evaluations at steps {steps}"
print(f"W4 perplexity above float: round-to-nearest {100 * gap_rtn:.2f}%, QA-LoRA {100 * gap:.2f}%")
# The deployed file: model.qforge.onnx (int4 blocks, opset 21) in onnxruntime on the held-out text.
sys.path.insert(0, os.path.join(os.environ["QFORGE_SOURCE_DIR"], "tests", "onnx"))
from deployed_check import check_deployed
for name, report in (("rtn", rtn), ("qalora", qalora)):
    check_deployed(name, report, rows=report["evaluation"]["rows"])
PY
