"""The embedded default: a small CNN (TorchScript) and calibration data in two
image sizes, made here so the quickstart needs nothing from outside.
Usage: make_demo.py OUTDIR"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from qforge_h5 import write_samples  # noqa: E402


class DemoCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1))
        self.classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32, 64), torch.nn.ReLU(),
                                              torch.nn.Linear(64, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


def main(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = DemoCNN().eval()
    torch.jit.trace(model, torch.randn(1, 1, 28, 28)).save(f"{out}/demo_cnn.pt")
    groups = {"28x28": {"x": rng.random((200, 1, 28, 28), dtype=np.float32) * 255},
              "32x32": {"x": rng.random((56, 1, 32, 32), dtype=np.float32) * 255}}
    write_samples(f"{out}/demo_calibration.h5", "tensor", ["x"], groups,
                  labels={g: rng.integers(0, 10, len(v["x"])) for g, v in groups.items()})


if __name__ == "__main__":
    main(sys.argv[1])
