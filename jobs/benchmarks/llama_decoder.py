"""A Llama-architecture decoder in plain torch, scriptable by LibTorch 1.13 and 2.x:
RMSNorm, rotary positions, grouped-query attention, SwiGLU, untied head. The
rotary tables and the causal mask are made once per call, before the first
block, and every block reads them (as the `transformers` models do).
    LlamaDecoder(vocab, width, depth, heads, kv_heads, hidden)"""
from typing import Tuple

import torch
import torch.nn.functional as F


class RmsNorm(torch.nn.Module):
    def __init__(self, width: int, eps: float = 1e-5):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.size(-1) // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(torch.nn.Module):
    def __init__(self, width: int, heads: int, kv_heads: int):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, width // heads
        self.q = torch.nn.Linear(width, width, bias=False)
        self.k = torch.nn.Linear(width, kv_heads * self.head_dim, bias=False)
        self.v = torch.nn.Linear(width, kv_heads * self.head_dim, bias=False)
        self.o = torch.nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t = x.size(0), x.size(1)
        q = self.q(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
        v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        scores = torch.matmul(q, k.transpose(-2, -1)) * (self.head_dim ** -0.5) + mask
        out = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.o(out.transpose(1, 2).reshape(b, t, -1))


class Mlp(torch.nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.gate = torch.nn.Linear(width, hidden, bias=False)
        self.up = torch.nn.Linear(width, hidden, bias=False)
        self.down = torch.nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class LlamaBlock(torch.nn.Module):
    def __init__(self, width: int, heads: int, kv_heads: int, hidden: int):
        super().__init__()
        self.attn_norm = RmsNorm(width)
        self.attn = Attention(width, heads, kv_heads)
        self.mlp_norm = RmsNorm(width)
        self.mlp = Mlp(width, hidden)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)
        return x + self.mlp(self.mlp_norm(x))


def rotary_and_mask(ids: torch.Tensor, inv_freq: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rotary tables (cos, sin) and the causal mask of a batch of token ids."""
    t = ids.size(1)
    angles = torch.outer(torch.arange(t, device=ids.device, dtype=torch.float32), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    mask = torch.full((t, t), float("-inf"), device=ids.device).triu(1)
    return angles.cos(), angles.sin(), mask


class LlamaDecoder(torch.nn.Module):
    def __init__(self, vocab: int, width: int, depth: int, heads: int, kv_heads: int, hidden: int):
        super().__init__()
        head_dim = width // heads
        self.embed = torch.nn.Embedding(vocab, width)
        self.layers = torch.nn.ModuleList([LlamaBlock(width, heads, kv_heads, hidden) for _ in range(depth)])
        self.norm = RmsNorm(width)
        self.head = torch.nn.Linear(width, vocab, bias=False)
        self.register_buffer("inv_freq", 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim)))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        cos, sin, mask = rotary_and_mask(ids, self.inv_freq)
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.head(self.norm(x))


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
