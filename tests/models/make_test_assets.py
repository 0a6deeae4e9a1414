"""Test models and data for qforge's tests, made from code nobody here wrote
(torchvision) and from small multi-input models. Usage: make_test_assets.py OUTDIR"""
import os
import shutil
import sys
from typing import Dict

import numpy as np
import torch
import torchvision

from qforge_h5 import write_samples  # src/python (ctest's PYTHONPATH)


class TupleModel(torch.nn.Module):
    """Token ids + attention mask, positional (a tiny text classifier)."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(100, 16)
        self.proj = torch.nn.Linear(16, 32)
        self.norm = torch.nn.LayerNorm(32)
        self.head = torch.nn.Linear(32, 4)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm(torch.relu(self.proj(self.embed(ids))))
        m = mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1).clamp(min=1.0))


class DictModel(torch.nn.Module):
    """One Dict[str, Tensor] argument, as clika_compile's dict inputs."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.inner(batch["input_ids"], batch["attention_mask"])


class KwargsModel(torch.nn.Module):
    """Static keyword arguments (clika_compile's forward_fn example)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor, scale: float = 1.0, use_relu: bool = False) -> torch.Tensor:
        y = self.fc(x) * scale
        if use_relu:
            y = torch.relu(y)
        return y


class MhaEncoder(torch.nn.Module):
    """A small transformer-encoder classifier on nn.MultiheadAttention: token
    embedding, one self-attention block with a GELU MLP (post-norm), mean over
    positions, a linear head."""

    def __init__(self, vocab=100, width=32, heads=2, classes=4):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.attn = torch.nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm1 = torch.nn.LayerNorm(width)
        self.fc1 = torch.nn.Linear(width, 2 * width)
        self.act = torch.nn.GELU()
        self.fc2 = torch.nn.Linear(2 * width, width)
        self.norm2 = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        a, _ = self.attn(h, h, h, need_weights=False)
        h = self.norm1(h + a)
        h = self.norm2(h + self.fc2(self.act(self.fc1(h))))
        return self.head(h.mean(1))


class WideMlp(torch.nn.Module):
    """Linear layers whose inputs are multiples of 64 and 128: weights in groups of
    64 or 128 (tensorrt_llm's int4 groups) fit every layer."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(64, 128)
        self.fc2 = torch.nn.Linear(128, 128)
        self.head = torch.nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.gelu(self.fc1(x))
        return self.head(torch.nn.functional.gelu(self.fc2(h)) + h)


class RmsNorm(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.weight = torch.nn.Parameter(1 + 0.1 * torch.randn(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))


class DecoderBlock(torch.nn.Module):
    """A Llama-style block (RMSNorm, q/k/v, SwiGLU) with a LayerNorm before the
    MLP: every place an input scale can fold into, and one it cannot (o)."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.attn_norm = RmsNorm(width)
        self.q = torch.nn.Linear(width, width, bias=False)
        self.k = torch.nn.Linear(width, width, bias=False)
        self.v = torch.nn.Linear(width, width, bias=False)
        self.o = torch.nn.Linear(width, width, bias=False)
        self.mlp_norm = torch.nn.LayerNorm(width)
        self.gate = torch.nn.Linear(width, hidden, bias=False)
        self.up = torch.nn.Linear(width, hidden)
        self.down = torch.nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.attn_norm(x)
        width = h.size(-1)  # a read of h's shape: the division by s still folds into attn_norm
        q, k, v = self.q(h), self.k(h), self.v(h)
        a = torch.softmax(q @ k.transpose(1, 2) / float(width // 8), dim=-1) @ v
        x = x + self.o(a)
        h = self.mlp_norm(x)
        return x + self.down(torch.nn.functional.silu(self.gate(h)) * self.up(h))


class SmallDecoder(torch.nn.Module):
    def __init__(self, vocab: int = 100, width: int = 32, hidden: int = 64):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.blocks = torch.nn.Sequential(DecoderBlock(width, hidden), DecoderBlock(width, hidden))
        self.norm = torch.nn.LayerNorm(width)
        self.proj = torch.nn.Linear(width, width)
        self.head = torch.nn.Linear(width, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.proj(self.norm(self.blocks(self.embed(ids)))))


def make_small_decoder(out):
    """Outlier channels, as trained language models have: a few input channels
    of every norm far larger than the rest (what AWQ and SmoothQuant are for)."""
    torch.manual_seed(5)
    model = SmallDecoder().eval()
    with torch.no_grad():
        for norm in [model.blocks[0].attn_norm, model.blocks[1].attn_norm, model.blocks[0].mlp_norm,
                     model.blocks[1].mlp_norm, model.norm]:
            norm.weight[:3] *= 12.0
    torch.jit.script(model).save(f"{out}/small_decoder_scripted.pt")


def make_llama_decoder(out):
    """Three Llama-style blocks (jobs/benchmarks/llama_decoder.py): the rotary
    tables and the mask made before the first block are read by every block."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "jobs", "benchmarks"))
    from llama_decoder import LlamaDecoder
    torch.manual_seed(6)
    model = LlamaDecoder(vocab=100, width=32, depth=3, heads=4, kv_heads=2, hidden=64).eval()
    torch.jit.script(model).save(f"{out}/llama_decoder_scripted.pt")
    with torch.no_grad():
        torch.jit.trace(model, torch.randint(0, 100, (2, 12))).save(f"{out}/llama_decoder_traced.pt")


def main(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    resnet = torchvision.models.resnet18(num_classes=10).eval()
    torch.jit.trace(resnet, torch.randn(1, 3, 32, 32)).save(f"{out}/resnet18_traced.pt")
    mobilenet = torchvision.models.mobilenet_v2(num_classes=10).eval()
    torch.jit.script(mobilenet).save(f"{out}/mobilenet_v2_scripted.pt")
    ids = torch.randint(0, 100, (2, 12))
    tuple_model = TupleModel().eval()
    torch.jit.trace(tuple_model, (ids, torch.ones_like(ids))).save(f"{out}/tuple_model.pt")
    # Same weights as tuple_model: both bindings must give the same outputs.
    torch.jit.script(DictModel(tuple_model).eval()).save(f"{out}/dict_model.pt")
    torch.jit.script(KwargsModel().eval()).save(f"{out}/kwargs_model.pt")
    with torch.no_grad():
        torch.jit.trace(mobilenet, torch.randn(1, 3, 32, 32)).save(f"{out}/mobilenet_v2_traced.pt")

    # One MHA encoder, traced twice. Under no_grad nn.MultiheadAttention takes its
    # fused fast path: the trace records the whole attention as ONE op,
    #   aten::_native_multi_head_attention(query, key, value, embed_dim, num_head,
    #       qkv_weight, qkv_bias, proj_weight, proj_bias, mask, need_weights, ...)
    # beside aten::embedding, aten::add, aten::layer_norm, aten::linear, aten::gelu,
    # aten::mean. With grad enabled it takes the unfused path: aten::linear (in_proj),
    # aten::chunk, aten::contiguous, aten::view, aten::transpose, aten::div (q scaling),
    # aten::bmm, aten::softmax, aten::bmm, aten::linear (out_proj), with aten::size,
    # aten::mul, aten::Int and prim::NumToTensor computing the shapes (so batch and
    # sequence length stay dynamic). The grad-mode trace cannot pass the tracer's own
    # check, which re-traces under no_grad and meets the fast path: check_trace=False.
    mha = MhaEncoder().eval()
    tokens = torch.randint(0, 100, (2, 12))
    with torch.no_grad():
        torch.jit.trace(mha, tokens).save(f"{out}/mha_encoder_traced.pt")
    torch.jit.trace(mha, tokens, check_trace=False).save(f"{out}/mha_encoder_slow_traced.pt")
    wide = WideMlp().eval()
    with torch.no_grad():
        torch.jit.trace(wide, torch.randn(2, 64)).save(f"{out}/wide_mlp_traced.pt")

    # Images in two shape groups (dynamic spatial axes), with labels.
    images = {"s32": {"x": rng.standard_normal((23, 3, 32, 32), dtype=np.float32)},
              "s40": {"x": rng.standard_normal((14, 3, 40, 40), dtype=np.float32)}}
    write_samples(f"{out}/images.h5", "tensor", ["x"], images,
                  labels={k: rng.integers(0, 10, len(v["x"])) for k, v in images.items()})
    # Text: ids + mask, two sequence lengths, as tuple and as dict.
    text = {}
    for length, rows in ((12, 17), (20, 9)):
        text[f"len{length}"] = {"ids": rng.integers(0, 100, (rows, length)).astype(np.int64),
                                "mask": (rng.random((rows, length)) > 0.2).astype(np.uint8)}
    write_samples(f"{out}/text_tuple.h5", "tuple", ["ids", "mask"], text)
    dict_text = {g: {"input_ids": v["ids"], "attention_mask": v["mask"]} for g, v in text.items()}
    write_samples(f"{out}/text_dict.h5", "dict", ["input_ids", "attention_mask"], dict_text)
    write_samples(f"{out}/vectors.h5", "tensor", ["x"], {"all": {"x": rng.standard_normal((10, 8), dtype=np.float32)}})
    # Token ids for the MHA encoders: two sequence lengths, with labels. (A generator
    # of their own: the files above and below stay as they were.)
    rng_new = np.random.default_rng(1)
    tokens = {"len12": {"ids": rng_new.integers(0, 100, (24, 12)).astype(np.int64)},
              "len20": {"ids": rng_new.integers(0, 100, (16, 20)).astype(np.int64)}}
    write_samples(f"{out}/tokens.h5", "tensor", ["ids"], tokens,
                  labels={k: rng_new.integers(0, 4, len(v["ids"])) for k, v in tokens.items()})
    write_samples(f"{out}/vectors64.h5", "tensor", ["x"],
                  {"all": {"x": rng_new.standard_normal((40, 64), dtype=np.float32)}},
                  labels={"all": rng_new.integers(0, 10, 40)})

    # Broken files, one fault each.
    bad = rng.standard_normal((10, 3, 32, 32), dtype=np.float32)
    bad[7, 1, 2, 3] = np.nan
    write_samples(f"{out}/nan.h5", "tensor", ["x"], {"s32": {"x": bad}})
    write_samples(f"{out}/rows_disagree.h5", "tuple", ["ids", "mask"],
                  {"g": {"ids": np.zeros((5, 4), np.int64), "mask": np.zeros((6, 4), np.uint8)}})
    import h5py
    with h5py.File(f"{out}/bad_dtype.h5", "w") as f:
        f.attrs["qforge_format"] = 1
        f.attrs["input_kind"] = "tensor"
        f.attrs["input_names"] = "x"
        f.create_dataset("samples/g/x", data=np.array([b"a", b"b"], dtype="S1"))
    with h5py.File(f"{out}/no_layout.h5", "w") as f:
        f.create_dataset("x", data=np.zeros((4, 3), np.float32))
    shutil.copy(f"{out}/images.h5", f"{out}/truncated.h5")
    size = os.path.getsize(f"{out}/truncated.h5")
    with open(f"{out}/truncated.h5", "r+b") as f:
        f.truncate(size // 2)
    with open(f"{out}/not_a_model.pt", "wb") as f:
        f.write(b"this is not a TorchScript archive")
    make_small_decoder(out)
    make_llama_decoder(out)
    make_hf_like(out)


def make_hf_like(out):
    """A decoder written as transformers 5 writes Llama (tests/models/hf_like.py), traced on the
    CPU: its graph holds tensors and devices as constants, and its output layer is tied."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from hf_like import Llama, Logits
    torch.manual_seed(7)
    model = Llama(tied=True).eval()
    with torch.no_grad():
        torch.jit.trace(Logits(model), torch.randint(1, 100, (2, 8))).save(f"{out}/hf_llama_traced.pt")


if __name__ == "__main__":
    main(sys.argv[1])
