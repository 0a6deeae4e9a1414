"""Benchmark inputs with random weights and random data:
    bench_assets.py OUTDIR MODEL ROWS SIZE
MODEL is a torchvision classifier (resnet18, resnet50, ...; SIZE = image side,
traced) or `decoder` (a GPT-style decoder-only transformer of about 134M
parameters: 12 blocks of width 768, 32,000-token vocabulary; SIZE = context
length; scripted) or `llama` (jobs/benchmarks/llama_decoder.py, 1.1B
parameters: 16 blocks of width 2048, 32 heads and 8 key/value heads, SwiGLU of
8192; scripted). Writes OUTDIR/MODEL.pt and OUTDIR/MODEL_calibration.h5."""
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples", "fortunes"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "src", "python"))  # qforge_h5
from make_fortunes_lm import Block  # noqa: E402  (the fortunes model's pre-norm causal block)
from qforge_h5 import write_samples  # noqa: E402
from llama_decoder import LlamaDecoder  # noqa: E402

VOCAB = 32000


class Decoder(torch.nn.Module):
    def __init__(self, context, width=768, heads=12, depth=12):
        super().__init__()
        self.tokens = torch.nn.Embedding(VOCAB, width)
        self.positions = torch.nn.Embedding(context, width)
        self.blocks = torch.nn.Sequential(*[Block(width, heads) for _ in range(depth)])
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, VOCAB)

    def forward(self, ids):
        positions = torch.arange(ids.size(1), device=ids.device)
        return self.head(self.norm(self.blocks(self.tokens(ids) + self.positions(positions))))


def make_model(name, size):
    torch.manual_seed(0)
    if name == "decoder":
        return Decoder(size).eval()
    if name == "llama":
        return LlamaDecoder(VOCAB, width=2048, depth=16, heads=32, kv_heads=8, hidden=8192).eval()
    import torchvision
    return getattr(torchvision.models, name)().eval()


def main(out, name, rows, size):
    os.makedirs(out, exist_ok=True)
    model = make_model(name, size)
    rng = np.random.default_rng(0)
    if name in ("decoder", "llama"):
        torch.jit.script(model).save(os.path.join(out, f"{name}.pt"))
        ids = rng.integers(0, VOCAB, (rows, size), dtype=np.int64)
        write_samples(os.path.join(out, f"{name}_calibration.h5"), "tensor", ["ids"], {f"t{size}": {"ids": ids}})
    else:
        torch.jit.trace(model, torch.randn(1, 3, size, size)).save(os.path.join(out, f"{name}.pt"))
        images = rng.standard_normal((rows, 3, size, size), dtype=np.float32)
        write_samples(os.path.join(out, f"{name}_calibration.h5"), "tensor", ["x"], {f"s{size}": {"x": images}})
    print(f"{name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {rows} rows")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
