"""Inputs of bench_gptq_kept_inputs.sh: a Llama-architecture decoder twice,
with the same weights. In `branched.pt` the blocks run inside a branch taken
at run time (`if ids.size(0) > 0`), where qforge cannot cut the method at
them, so its sequential GPTQ computes every block's inputs from the model's
inputs again; `llama.pt` keeps them. Same work otherwise.
    bench_gptq_kept_inputs.py OUTDIR DEPTH WIDTH ROWS LENGTH"""
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "src", "python"))  # qforge_h5
from llama_decoder import LlamaDecoder, rotary_and_mask  # noqa: E402
from qforge_h5 import write_samples  # noqa: E402


class Branched(LlamaDecoder):
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        cos, sin, mask = rotary_and_mask(ids, self.inv_freq)
        x = self.embed(ids)
        if ids.size(0) > 0:
            for layer in self.layers:
                x = layer(x, cos, sin, mask)
        return self.head(self.norm(x))


def main(out, depth, width, rows, length):
    os.makedirs(out, exist_ok=True)
    shape = dict(vocab=32000, width=width, depth=depth, heads=width // 64, kv_heads=max(width // 256, 1),
                 hidden=(width * 8 // 3 + 63) // 64 * 64)
    torch.manual_seed(0)
    model = LlamaDecoder(**shape).eval()
    branched = Branched(**shape).eval()
    branched.load_state_dict(model.state_dict())
    torch.jit.script(model).save(os.path.join(out, "llama.pt"))
    torch.jit.script(branched).save(os.path.join(out, "branched.pt"))
    ids = np.random.default_rng(0).integers(0, 32000, (rows, length), dtype=np.int64)
    write_samples(os.path.join(out, "ids.h5"), "tensor", ["ids"], {f"t{length}": {"ids": ids}})
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {depth} blocks of width {width}")


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:6]))
