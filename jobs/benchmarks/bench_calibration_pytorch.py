"""The PyTorch side of jobs/benchmarks/bench_calibration_breakdown.sh, on one
GPU with the calibration set resident on it: plain inference of the model
(eager, as PyTorch users run it, and the TorchScript file qforge reads), and
calibration as a PyTorch user writes it: torch.ao MinMaxObserver or
HistogramObserver in a forward pre-hook of every Linear/Conv2d (the layers
qforge observes). Median of REPEATS warm runs after one cold run.
Usage: python bench_calibration_pytorch.py WORK MODEL SIZE BATCH [REPEATS]
Prints a Markdown table."""
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_assets import make_model  # noqa: E402
from bench_pytorch_baseline import load_rows, quantized_layers  # noqa: E402


def timed(body, repeats):
    runs = []
    for _ in range(repeats + 1):
        torch.cuda.synchronize()
        start = time.perf_counter()
        body()
        torch.cuda.synchronize()
        runs.append(time.perf_counter() - start)
    return runs[0], runs[1:]


def forward_all(model, batches):
    with torch.no_grad():
        for b in batches:
            model(b)


def observed(model, batches, make_observer):
    def run():
        hooks = []
        for _, m in quantized_layers(model):
            o = make_observer().cuda()
            hooks.append(m.register_forward_pre_hook(lambda mod, args, o=o: o(args[0])))
        forward_all(model, batches)
        for h in hooks:
            h.remove()
    return run


def main(work, name, size, batch, repeats):
    rows, _ = load_rows(os.path.join(work, f"{name}_calibration.h5"), 0, 1)
    batches = [rows[i:i + batch].cuda() for i in range(0, len(rows), batch)]
    eager = make_model(name, size).cuda().eval()
    scripted = torch.jit.load(os.path.join(work, f"{name}.pt"), map_location="cuda").eval()
    parts = [
        ("PyTorch: plain inference, eager", lambda: forward_all(eager, batches)),
        ("PyTorch: plain inference, the TorchScript file", lambda: forward_all(scripted, batches)),
        ("PyTorch: torch.ao MinMaxObserver hooks",
         observed(eager, batches, lambda: torch.ao.quantization.MinMaxObserver(dtype=torch.quint8))),
        ("PyTorch: torch.ao HistogramObserver hooks",
         observed(eager, batches, lambda: torch.ao.quantization.HistogramObserver(dtype=torch.quint8))),
    ]
    print(f"- PyTorch {torch.__version__}, {torch.cuda.get_device_name()}, {len(rows)} samples, batch {batch}, "
          f"{len(quantized_layers(eager))} observed layers; median of {repeats} warm runs\n")
    print("| part | warm s | samples/s | cold s | warm runs (s) |\n| --- | ---: | ---: | ---: | --- |")
    for label, body in parts:
        cold, warm = timed(body, repeats)
        median = statistics.median(warm)
        runs = ", ".join(f"{s:.3f}" for s in warm)
        print(f"| {label} | {median:.3f} | {len(rows) / median:.0f} | {cold:.3f} | {runs} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 3)
