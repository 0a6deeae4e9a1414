"""A small causal transformer language model trained on real English text:
the fortunes Debian's `fortunes` package ships (/usr/share/games/fortunes,
about 2.5 MB). Characters (bytes) are the tokens. The fortunes are shuffled
with a fixed seed and split by fortune, so held-out text is never trained on:
    calibration.h5   2,048 windows of 64 tokens from the training fortunes
    eval.h5          1,024 windows of 64 tokens from held-out fortunes
Each row's input is 64 tokens and its labels the 64 that follow one position
later (next-token prediction), so qforge evaluates perplexity.
    fortunes_lm.pt   the trained model, scripted: int64 [batch, 64] tokens
                     -> [batch, 64, 128] next-token logits (kept when present)
Usage: make_fortunes_lm.py OUTDIR [TRAIN_STEPS] [--width W --depth D --heads H --lr LR --device DEV]
(defaults: 3 blocks of width 128, 4 heads, 3e-3, cpu). QFORGE_FORTUNES_DIR names
another copy of the fortunes directory."""
import argparse
import glob
import math
import os
import random
import sys
import time

import numpy as np
import torch

FORTUNES = os.environ.get("QFORGE_FORTUNES_DIR", "/usr/share/games/fortunes")
CONTEXT = 64
VOCAB = 128  # ASCII; any other byte becomes '?'
NO_FORTUNES = 77  # exit code when the package is not installed (tests report "skipped")


class Attention(torch.nn.Module):
    """Causal multi-head self-attention with plain Linear projections (quantizable layers)."""

    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.out = torch.nn.Linear(width, width)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q = q.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        k = k.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        v = v.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        scores = q.matmul(k.transpose(-2, -1)) / math.sqrt(c // self.heads)
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
        y = torch.softmax(scores, dim=-1).matmul(v)
        return self.out(y.transpose(1, 2).reshape(b, t, c))


class Block(torch.nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(width)
        self.attention = Attention(width, heads)
        self.norm2 = torch.nn.LayerNorm(width)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 4 * width), torch.nn.GELU(),
                                       torch.nn.Linear(4 * width, width))

    def forward(self, x):
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class FortunesLM(torch.nn.Module):
    """Pre-norm decoder-only transformer, 3 blocks of width 128 (~0.6M parameters)."""

    def __init__(self, width=128, heads=4, depth=3):
        super().__init__()
        self.tokens = torch.nn.Embedding(VOCAB, width)
        self.positions = torch.nn.Embedding(CONTEXT, width)
        self.blocks = torch.nn.Sequential(*[Block(width, heads) for _ in range(depth)])
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, VOCAB)

    def forward(self, ids):
        positions = torch.arange(ids.size(1), device=ids.device)
        x = self.tokens(ids) + self.positions(positions)
        return self.head(self.norm(self.blocks(x)))


def read_fortunes():
    texts = []
    for path in sorted(glob.glob(os.path.join(FORTUNES, "*"))):
        if path.endswith((".dat", ".u8")) or os.path.islink(path):
            continue
        with open(path, "rb") as f:
            texts += [t.strip(b"\n") for t in f.read().split(b"\n%\n")]
    return [t for t in texts if t]


def encode(fortunes):
    data = np.frombuffer(b"\n\n".join(fortunes) + b"\n\n", dtype=np.uint8).astype(np.int64)
    data[data >= VOCAB] = ord("?")
    return data


def windows(data, starts):
    inputs = np.stack([data[s:s + CONTEXT] for s in starts])
    labels = np.stack([data[s + 1:s + CONTEXT + 1] for s in starts])
    return inputs, labels


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("steps", nargs="?", type=int, default=1500)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    out, steps = args.out, args.steps
    if not os.path.isdir(FORTUNES):
        print(f"make_fortunes_lm: {FORTUNES} is missing; install Debian's `fortunes` package", file=sys.stderr)
        sys.exit(NO_FORTUNES)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "src", "python"))
    from qforge_h5 import write_samples
    os.makedirs(out, exist_ok=True)
    fortunes = read_fortunes()
    random.Random(0).shuffle(fortunes)
    held_out = len(fortunes) // 20
    train, test = encode(fortunes[held_out:]), encode(fortunes[:held_out])
    print(f"{len(fortunes)} fortunes: {len(train)} training characters, {len(test)} held out")

    rng = np.random.default_rng(0)
    calibration = windows(train, rng.integers(0, len(train) - CONTEXT - 1, 2048))
    write_samples(os.path.join(out, "calibration.h5"), "tensor", ["ids"], {"all": {"ids": calibration[0]}},
                  labels={"all": calibration[1]})
    starts = np.arange(0, len(test) - CONTEXT - 1, CONTEXT)[:1024]
    evaluation = windows(test, starts)
    write_samples(os.path.join(out, "eval.h5"), "tensor", ["ids"], {"all": {"ids": evaluation[0]}},
                  labels={"all": evaluation[1]})

    if os.path.exists(os.path.join(out, "fortunes_lm.pt")):
        return
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    model = FortunesLM(args.width, args.heads, args.depth).to(args.device)
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters: {args.depth} blocks of width "
          f"{args.width}, on {args.device}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps, pct_start=0.05)
    loss_fn = torch.nn.CrossEntropyLoss()
    start = time.time()
    for step in range(steps):
        x, y = (torch.from_numpy(a).to(args.device) for a in windows(train, rng.integers(0, len(train) - CONTEXT - 1, 64)))
        loss = loss_fn(model(x).reshape(-1, VOCAB), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if (step + 1) % 250 == 0:
            print(f"step {step + 1}/{steps}: training loss {loss.item():.3f} ({time.time() - start:.0f} s)", flush=True)
    model = model.cpu().eval()
    with torch.no_grad():
        x, y = torch.from_numpy(evaluation[0]), torch.from_numpy(evaluation[1])
        nll = loss_fn(model(x).reshape(-1, VOCAB), y.reshape(-1)).item()
    print(f"held-out perplexity {math.exp(nll):.3f} ({nll:.4f} nats per character)")
    torch.jit.script(model).save(os.path.join(out, "fortunes_lm.pt"))


if __name__ == "__main__":
    main()
