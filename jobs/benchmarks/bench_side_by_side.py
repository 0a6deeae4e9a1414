"""qforge and the plain PyTorch baseline on the same work, one table per model,
from the runs jobs/benchmarks/bench_gpu.sh left in WORK: qforge's report.json files and the
baseline's JSON lines (WORK/baseline.jsonl). Ratios are qforge / PyTorch: below 1
qforge is faster.
Usage: bench_side_by_side.py WORK MODEL "RANKS" """
import glob
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))
from bench_row import run_seconds  # noqa: E402


def qforge_seconds(work, tag, prefix):
    reports = sorted(glob.glob(os.path.join(work, tag + "-*", "report.json")))
    if not reports:
        return None
    return statistics.median(run_seconds(json.load(open(r)), prefix, 1)[0] for r in reports)


def cell(ours, theirs):
    def text(x):
        return "–" if x is None else f"{x:.3f}"
    ratio = "–" if ours is None or theirs is None else f"{ours / theirs:.2f}×"
    return f"{text(ours)} | {text(theirs)} | {ratio}"


def main(work, model, ranks):
    baseline = {}
    with open(os.path.join(work, "baseline.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if row["model"] == model:
                baseline[row["ranks"]] = row  # the latest run of each rank count
    lora_from = next((r["lora_from"] for r in baseline.values()), "?")
    print(f"# {model}: qforge against plain PyTorch, same machine and call\n")
    print("Calibration: qforge's TensorRT-preset pass (every quantized layer's input range and percentile")
    print("histogram, one pass, reduced over ranks) against PyTorch's MinMaxObserver hooks (ranges only:")
    print("less work). Fine-tuning: median step time from step 4")
    print(f"on, the same rows per GPU on both sides; PyTorch's plain LoRA is {lora_from}.\n")
    print("| GPUs | calibration s qforge | PyTorch | ratio | LoRA step s qforge | PyTorch | ratio "
          "| QA-LoRA step s qforge | PyTorch | ratio |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in (int(r) for r in ranks.split()):
        b = baseline.get(n, {})
        print(f"| {n} | "
              + cell(qforge_seconds(work, f"cal_{model}_{n}", "calibrate: ranges"), b.get("calibration_s")) + " | "
              + cell(qforge_seconds(work, f"ft_{model}_weak_lora_{n}", "steps"), b.get("lora_step_s")) + " | "
              + cell(qforge_seconds(work, f"ft_{model}_weak_qa_lora_{n}", "steps"), b.get("qa_lora_step_s")) + " |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
