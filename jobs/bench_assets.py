"""Benchmark inputs: a torchvision model with random weights, traced, and
random calibration images. Usage: bench_assets.py OUTDIR MODEL ROWS SIZE"""
import os
import sys

import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(__file__))
from qforge_h5 import write_samples  # noqa: E402


def main(out, name, rows, size):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    torch.jit.trace(model, torch.randn(1, 3, size, size)).save(os.path.join(out, f"{name}.pt"))
    images = np.random.default_rng(0).standard_normal((rows, 3, size, size), dtype=np.float32)
    write_samples(os.path.join(out, "calibration.h5"), "tensor", ["x"], {f"s{size}": {"x": images}})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
