"""Language models written the way Hugging Face transformers 5 writes them, in plain torch
(LibTorch 1.13's Python and 2.x alike), so that the dev machine's tests meet the constructs
that transformers' traces hold without transformers installed:

- positions from a `torch.arange` over the cache position, made on `ids.device` (a trace
  records the device as a constant), rotary tables from a buffer (`inv_freq`), cos and sin;
- the attention mask built from index functions broadcast over (batch, head, query, key):
  causal `kv <= q`, padding read with advanced indexing `padding[b, kv]`, and packed sequences
  found with `torch.diff` and `cumsum`, then made additive with `torch.where`;
- grouped-query attention through `expand` + `reshape` (keys) and `repeat_interleave` (values),
  or scaled dot-product attention with a boolean mask where torch has it (2.x);
- RMSNorm computed in float32 and cast back (bf16/fp16 models);
- OPT's positions from `cumsum` of the attention mask; BERT's token types read with `gather`
  from a buffer, its mask made additive with `finfo.min`;
- a key/value cache: past keys and values as inputs, present ones as outputs.

    model = Llama(tied=True).eval(); traced = torch.jit.trace(Logits(model), ids)
    cached = torch.jit.trace(WithCache(model), (ids, *model.empty_cache(batch)))"""
import torch
import torch.nn.functional as F

VOCAB = 100


class RmsNorm(torch.nn.Module):
    def __init__(self, width, eps=1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.to(torch.float32)
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps)).to(dtype)


class Rotary(torch.nn.Module):
    def __init__(self, head_dim, base=10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x, position_ids):
        freq = self.inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
        positions = position_ids[:, None, :].float()
        freqs = (freq @ positions).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def decoder_mask(ids, attention_mask, past):
    """(boolean mask [B, 1, L, past + L] of what each query may attend to, position ids [B, L])."""
    batch, length = ids.shape
    cache_position = torch.arange(past, past + length, device=ids.device)
    kv_index = torch.arange(past + length, device=ids.device)
    position_ids = cache_position.unsqueeze(0).expand(batch, -1)
    # packed sequences: a position that does not follow the one before starts a new sequence
    first = position_ids[:, :1] - 1
    packed = (torch.diff(position_ids, prepend=first, dim=-1) != 1).cumsum(-1)
    b = torch.arange(batch, device=ids.device)[:, None, None, None]
    q = cache_position[None, None, :, None]
    kv = kv_index[None, None, None, :]
    allowed = kv <= q
    allowed = allowed & attention_mask.bool()[b, kv]
    allowed = allowed & (packed[b, q - past] == packed[b, q - past].new_zeros(()))
    return allowed, position_ids


class Attention(torch.nn.Module):
    def __init__(self, width, heads, kv_heads, sdpa):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim, self.sdpa = heads, kv_heads, width // heads, sdpa
        self.q_proj = torch.nn.Linear(width, heads * self.head_dim, bias=False)
        self.k_proj = torch.nn.Linear(width, kv_heads * self.head_dim, bias=False)
        self.v_proj = torch.nn.Linear(width, kv_heads * self.head_dim, bias=False)
        self.o_proj = torch.nn.Linear(heads * self.head_dim, width, bias=False)

    def forward(self, x, cos, sin, allowed, past_k=None, past_v=None):
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, -1, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, -1, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, -1, self.head_dim).transpose(1, 2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if past_k is not None:
            k = torch.cat([past_k, k], dim=-2)
            v = torch.cat([past_v, v], dim=-2)
        present = (k, v)
        rep = self.heads // self.kv_heads
        keys = k[:, :, None, :, :].expand(batch, self.kv_heads, rep, k.shape[-2], self.head_dim)
        keys = keys.reshape(batch, self.heads, k.shape[-2], self.head_dim)
        values = torch.repeat_interleave(v, rep, dim=1)
        if self.sdpa:
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed)
        else:
            scores = torch.matmul(q, keys.transpose(2, 3)) * self.head_dim ** -0.5
            scores = scores + torch.where(allowed, torch.zeros((), dtype=scores.dtype, device=x.device),
                                          torch.full((), torch.finfo(scores.dtype).min, dtype=scores.dtype,
                                                     device=x.device))
            probabilities = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            out = torch.matmul(probabilities, values)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1)), present


class Block(torch.nn.Module):
    def __init__(self, width, heads, kv_heads, sdpa):
        super().__init__()
        self.input_layernorm = RmsNorm(width)
        self.self_attn = Attention(width, heads, kv_heads, sdpa)
        self.post_attention_layernorm = RmsNorm(width)
        self.gate_proj = torch.nn.Linear(width, 2 * width, bias=False)
        self.up_proj = torch.nn.Linear(width, 2 * width, bias=False)
        self.down_proj = torch.nn.Linear(2 * width, width, bias=False)

    def forward(self, x, cos, sin, allowed, past_k=None, past_v=None):
        a, present = self.self_attn(self.input_layernorm(x), cos, sin, allowed, past_k, past_v)
        x = x + a
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h)), present


class Llama(torch.nn.Module):
    """Llama / Qwen2 / Mistral's shape: `run(ids, attention_mask, past)` -> (logits, presents)."""

    def __init__(self, width=32, heads=4, kv_heads=2, depth=2, tied=False, sdpa=False):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(VOCAB, width)
        self.rotary = Rotary(width // heads)
        self.layers = torch.nn.ModuleList([Block(width, heads, kv_heads, sdpa) for _ in range(depth)])
        self.norm = RmsNorm(width)
        self.lm_head = torch.nn.Linear(width, VOCAB, bias=False)
        if tied:
            self.lm_head.weight = self.embed_tokens.weight
        self.kv_heads, self.head_dim, self.depth = kv_heads, width // heads, depth

    def empty_cache(self, batch, length=0, dtype=torch.float32):
        return [torch.zeros(batch, self.kv_heads, length, self.head_dim, dtype=dtype) for _ in range(2 * self.depth)]

    def run(self, ids, attention_mask, past):
        past_length = past[0].shape[-2] if past else 0
        x = self.embed_tokens(ids)
        allowed, position_ids = decoder_mask(ids, attention_mask, past_length)
        cos, sin = self.rotary(x, position_ids)
        presents = []
        for i, layer in enumerate(self.layers):
            x, present = layer(x, cos, sin, allowed, *(past[2 * i:2 * i + 2] if past else ()))
            presents += list(present)
        return self.lm_head(self.norm(x)), presents


class Logits(torch.nn.Module):
    """What a user traces: the model's logits, no cache (use_cache=False)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model.run(input_ids, input_ids.new_ones(input_ids.shape), None)[0]


class WithCache(torch.nn.Module):
    """Logits and the present keys and values (layer by layer, key then value) from the
    ids and the past ones: prefill with an empty cache, decode one token at a time."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, *past):
        mask = torch.ones(input_ids.shape[0], past[0].shape[-2] + input_ids.shape[1], dtype=torch.long,
                          device=input_ids.device)
        logits, presents = self.model.run(input_ids, mask, list(past))
        return (logits, *presents)


class Conv1D(torch.nn.Module):
    """GPT-2's linear layer: the weight held [inputs, outputs] and applied with addmm."""

    def __init__(self, outputs, inputs):
        super().__init__()
        self.outputs = outputs
        self.weight = torch.nn.Parameter(torch.randn(inputs, outputs) * 0.2)
        self.bias = torch.nn.Parameter(torch.randn(outputs) * 0.02)

    def forward(self, x):
        size_out = x.size()[:-1] + (self.outputs,)
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(size_out)


class Gpt2(torch.nn.Module):
    """GPT-2's shape: Conv1D layers, learned positions, the tanh GELU, a head tied to the embedding."""

    def __init__(self, width=64, heads=4, depth=2):
        super().__init__()
        self.wte = torch.nn.Embedding(VOCAB, width)
        self.wpe = torch.nn.Embedding(64, width)
        self.h = torch.nn.ModuleList([torch.nn.ModuleDict({
            "ln_1": torch.nn.LayerNorm(width), "c_attn": Conv1D(3 * width, width), "c_proj": Conv1D(width, width),
            "ln_2": torch.nn.LayerNorm(width), "c_fc": Conv1D(4 * width, width), "mlp_proj": Conv1D(width, 4 * width)})
            for _ in range(depth)])
        self.ln_f = torch.nn.LayerNorm(width)
        self.lm_head = torch.nn.Linear(width, VOCAB, bias=False)
        self.lm_head.weight = self.wte.weight
        self.heads = heads

    def forward(self, input_ids):
        allowed, position_ids = decoder_mask(input_ids, input_ids.new_ones(input_ids.shape), 0)
        x = self.wte(input_ids) + self.wpe(position_ids)
        batch, length, width = x.shape
        for block in self.h:
            q, k, v = block["c_attn"](block["ln_1"](x)).split(width, dim=2)
            q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
            scores = (q @ k.transpose(-1, -2)) / (width // self.heads) ** 0.5
            scores = torch.where(allowed, scores, torch.full((), torch.finfo(scores.dtype).min))
            a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, width)
            x = x + block["c_proj"](a)
            x = x + block["mlp_proj"](F.gelu(block["c_fc"](block["ln_2"](x)), approximate="tanh"))
        return self.lm_head(self.ln_f(x))


class Opt(torch.nn.Module):
    """OPT's shape: learned positions from the cumulative sum of the attention mask."""

    def __init__(self, width=32, heads=4, depth=2):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(VOCAB, width)
        self.embed_positions = torch.nn.Embedding(64 + 2, width)
        self.layers = torch.nn.ModuleList([torch.nn.ModuleDict({
            "ln": torch.nn.LayerNorm(width), "qkv": torch.nn.Linear(width, 3 * width),
            "out": torch.nn.Linear(width, width), "ln2": torch.nn.LayerNorm(width),
            "fc1": torch.nn.Linear(width, 2 * width), "fc2": torch.nn.Linear(2 * width, width)})
            for _ in range(depth)])
        self.lm_head = torch.nn.Linear(width, VOCAB, bias=False)
        self.lm_head.weight = self.embed_tokens.weight
        self.heads = heads

    def forward(self, input_ids, attention_mask):
        positions = (torch.cumsum(attention_mask, dim=1) * attention_mask - 1).long()
        x = self.embed_tokens(input_ids) + self.embed_positions(positions + 2)
        batch, length, width = x.shape
        causal = torch.full((length, length), torch.finfo(x.dtype).min, device=x.device).triu(1)
        padding = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        mask = causal[None, None] + padding
        for layer in self.layers:
            q, k, v = layer["qkv"](layer["ln"](x)).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            scores = q @ k.transpose(-1, -2) / (width // self.heads) ** 0.5 + mask
            a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, width)
            x = x + layer["out"](a)
            x = x + layer["fc2"](torch.relu(layer["fc1"](layer["ln2"](x))))
        return self.lm_head(x)


class Bert(torch.nn.Module):
    """BERT's shape: a dict of input_ids and attention_mask; token types gathered from a buffer."""

    def __init__(self, width=32, heads=4, depth=2, labels=3):
        super().__init__()
        self.word_embeddings = torch.nn.Embedding(VOCAB, width)
        self.position_embeddings = torch.nn.Embedding(64, width)
        self.token_type_embeddings = torch.nn.Embedding(2, width)
        self.register_buffer("position_ids", torch.arange(64).expand((1, -1)), persistent=False)
        self.register_buffer("token_type_ids", torch.zeros(1, 64, dtype=torch.long), persistent=False)
        self.ln = torch.nn.LayerNorm(width)
        self.encoder = torch.nn.ModuleList([torch.nn.TransformerEncoderLayer(
            width, heads, 2 * width, dropout=0.0, batch_first=True, activation="gelu") for _ in range(depth)])
        self.pooler = torch.nn.Linear(width, width)
        self.classifier = torch.nn.Linear(width, labels)

    def forward(self, inputs: dict):
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        length = ids.shape[1]
        position_ids = self.position_ids[:, :length]
        token_types = torch.gather(self.token_type_ids.expand(ids.shape[0], -1), dim=1,
                                   index=position_ids.expand(ids.shape[0], -1))
        x = self.ln(self.word_embeddings(ids) + self.position_embeddings(position_ids) +
                    self.token_type_embeddings(token_types))
        additive = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        additive = additive.expand(-1, 1, length, -1).repeat_interleave(self.encoder[0].self_attn.num_heads, dim=0)
        additive = additive.reshape(-1, length, length)
        for layer in self.encoder:
            x = layer(x, src_mask=additive)
        return self.classifier(torch.tanh(self.pooler(x[:, 0])))


def generate(step, ids, tokens, cache=None):
    """Greedy generation of `tokens` tokens. step(ids) -> logits without a cache, or, with
    `cache` (the empty past), step(ids, *past) -> (logits, *present)."""
    out = []
    past = cache
    current = ids
    for _ in range(tokens):
        if past is None:
            logits = step(current)
        else:
            logits, *past = step(current, *past)
        token = logits[:, -1].argmax(-1, keepdim=True)
        out.append(token)
        current = torch.cat([current, token], 1) if past is None else token
    return torch.cat(out, 1)
