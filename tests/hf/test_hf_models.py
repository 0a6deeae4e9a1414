"""Models users hold, as they hold them: Hugging Face transformers (GPT-2, Llama with sdpa and eager
attention, Qwen2, Mistral, OPT, BERT with a dict of input_ids and attention_mask, ViT) and timm,
small configurations with random weights (and a Llama held in bfloat16, as transformers loads LLMs),
traced through the wrapper docs/transformers.md shows,
compiled by qforge for three recipes (INT8 for onnxruntime, 4-bit GPTQ in groups of 128 for
tensorrt_llm, W8A8 SmoothQuant for tensorrt) on the GPU and the CPU, on 1 rank and on 2 (the CPU,
compared byte for byte). Each compile's ONNX file runs in onnxruntime on fresh inputs (ids at a
length the data does not hold) against model.qforge.pt and against the float model; a decoder
traced with its key/value cache generates token by token in onnxruntime as the float model does.

Runs where transformers is installed (the GPU image) and is skipped elsewhere. As a script it
writes the table that docs/transformers.md quotes:

    python3 tests/hf/test_hf_models.py --table hf_table.md [--jobs 8] [--only llama_sdpa,bert]

Each test_<model> function is a ctest case (hf_<model>)."""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "onnx"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "src", "python"))
import onnx_check  # noqa: E402
from qforge_h5 import write_samples  # noqa: E402

try:
    import transformers
except ImportError:  # the dev machine: no transformers
    transformers = None

QFORGE = os.environ.get("QFORGE_BIN") or os.path.join(HERE, "..", "..", "build", "qforge")
VOCAB, WIDTH = 1000, 128
RECIPES = {  # name -> (target, quantization_settings, ONNX session config, floor of SQNR against float)
    "int8_ort": ("onnxruntime", "{}", None, 15.0),
    "gptq4_trtllm": ("tensorrt_llm", "{weights: {algorithm: gptq}}", {"session.qdq_matmulnbits_accuracy_level": "1"}, 8.0),
    "sq_w8a8_trt": ("tensorrt", "{activations: {smoothing: {method: smoothquant, alpha: 0.5}}}", None, 15.0),
}
MIN_ONNX_VS_TORCHSCRIPT_DB = 30.0


# --- the models, as users build and trace them --------------------------------------------

class Logits(torch.nn.Module):
    """The wrapper docs/transformers.md shows: ids in, logits out, no cache."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids, use_cache=False).logits


class DictLogits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs: dict):
        return self.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits


class PixelLogits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).logits


class WithCache(torch.nn.Module):
    """Logits and present keys/values from ids and past keys/values (layer by layer, key then value)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, *past):
        cache = transformers.DynamicCache(config=self.model.config)
        for layer in range(len(past) // 2):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        out = self.model(input_ids=input_ids, past_key_values=cache, use_cache=True)
        return (out.logits,) + tuple(t for layer in out.past_key_values.layers for t in (layer.keys, layer.values))


def decoder(name):
    t = transformers
    common = dict(vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    configs = {
        "gpt2": (t.GPT2LMHeadModel, lambda: t.GPT2Config(vocab_size=VOCAB, n_embd=WIDTH, n_layer=2, n_head=4,
                                                          n_positions=256), None),
        "llama_sdpa": (t.LlamaForCausalLM, lambda: t.LlamaConfig(**common), "sdpa"),
        "llama_eager": (t.LlamaForCausalLM, lambda: t.LlamaConfig(**common), "eager"),
        "qwen2": (t.Qwen2ForCausalLM, lambda: t.Qwen2Config(**common), None),
        "mistral": (t.MistralForCausalLM, lambda: t.MistralConfig(**common), None),
        "opt": (t.OPTForCausalLM, lambda: t.OPTConfig(vocab_size=VOCAB, hidden_size=WIDTH, ffn_dim=2 * WIDTH,
                                                      num_hidden_layers=2, num_attention_heads=4,
                                                      word_embed_proj_dim=WIDTH, max_position_embeddings=256), None),
    }
    cls, config, attention = configs[name]
    torch.manual_seed(0)
    if attention:
        return cls._from_config(config(), attn_implementation=attention).eval()
    return cls(config()).eval()


MODELS = ["gpt2", "llama_sdpa", "llama_eager", "qwen2", "mistral", "opt", "bert", "vit",
          "timm_convnext_atto", "timm_efficientnet_b0", "timm_deit_tiny", "llama_bf16"]
DECODERS = MODELS[:6]


def ids(rows, length, seed):
    return np.random.default_rng(seed).integers(0, VOCAB, (rows, length)).astype(np.int64)


def build(name, work):
    """(traced model path, float module, data path, input names, kind, fresh inputs) for a model."""
    rng = np.random.default_rng(1)
    if name in DECODERS or name == "llama_bf16":
        # llama_bf16: held in bfloat16 as transformers loads LLMs; compiled in bfloat16
        module = Logits(decoder(name) if name in DECODERS else decoder("llama_sdpa").to(torch.bfloat16))
        example = (torch.from_numpy(ids(2, 16, 2)),)
        names, kind = ["input_ids"], "tensor"
        groups = {"len16": {"input_ids": ids(32, 16, 3)}, "len32": {"input_ids": ids(16, 32, 4)}}
        fresh = {"input_ids": ids(3, 24, 5)}
    elif name == "bert":
        torch.manual_seed(0)
        module = DictLogits(transformers.BertForSequenceClassification(transformers.BertConfig(
            vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=2 * WIDTH, num_labels=3)).eval())
        names, kind = ["input_ids", "attention_mask"], "dict"

        def masked(rows, length, seed):
            mask = np.ones((rows, length), np.int64)
            mask[:, length - 3:] = np.random.default_rng(seed).integers(0, 2, (rows, 3))
            return {"input_ids": ids(rows, length, seed), "attention_mask": mask}

        example = ({k: torch.from_numpy(v) for k, v in masked(2, 16, 2).items()},)
        groups = {"len16": masked(32, 16, 3), "len32": masked(16, 32, 4)}
        fresh = masked(3, 24, 5)
    else:
        torch.manual_seed(0)
        if name == "vit":
            module = PixelLogits(transformers.ViTForImageClassification(transformers.ViTConfig(
                image_size=32, patch_size=8, hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=2 * WIDTH, num_labels=10)).eval())
            size = 32
        else:
            import timm
            module = timm.create_model({"timm_convnext_atto": "convnext_atto", "timm_efficientnet_b0": "efficientnet_b0",
                                        "timm_deit_tiny": "deit_tiny_patch16_224"}[name], pretrained=False,
                                       num_classes=10).eval()
            size = 224 if name == "timm_deit_tiny" else 64
        example = (torch.randn(2, 3, size, size),)
        names, kind = ["x"], "tensor"
        groups = {"all": {"x": rng.standard_normal((32, 3, size, size)).astype(np.float32)}}
        fresh = {"x": rng.standard_normal((3, 3, size, size)).astype(np.float32)}
    path = os.path.join(work, f"{name}.pt")
    with torch.no_grad():
        torch.jit.trace(module, example, strict=False, check_trace=False).save(path)
    data = os.path.join(work, f"{name}.h5")
    write_samples(data, kind, names, groups)
    return path, module, data, names, kind, fresh


# --- one compile, checked -----------------------------------------------------------------------

def compile_once(work, name, recipe, device, ranks, model_path, data):
    target, quantization, _, _ = RECIPES[recipe]
    out = os.path.join(work, f"{name}-{recipe}-{device}-{ranks}")
    cfg = out + ".yaml"
    with open(cfg, "w") as f:
        f.write(f"""model: {{path: {model_path}}}
out_dir: {out}
device: {device}
gpu_index: 0
calibration_inputs: {{files: [{data}], batch_size: 8}}
evaluation_inputs: {{files: [{data}], batch_size: 8, max_samples: 16}}
deployment_settings: {{target: {target}}}
quantization_settings: {quantization}
""")
    command = [QFORGE, "compile", cfg]
    if ranks > 1:
        command = ["mpirun", "-np", str(ranks), "--oversubscribe", "--allow-run-as-root"] + command
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", NCCL_NVLS_ENABLE="0")
    start = time.time()
    p = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    row = {"model": name, "recipe": recipe, "device": device, "ranks": ranks, "exit": p.returncode,
           "seconds": time.time() - start, "out": out}
    row["log"] = p.stdout + p.stderr
    if p.returncode != 0:
        row["error"] = (p.stderr.strip().splitlines() or ["?"])[-1][:300]
        return row
    report = json.load(open(os.path.join(out, "report.json")))
    row["vs_float_db"] = report["evaluation"]["output_sqnr_db"]
    weighted = [l for l in report["layers"] if l["type"] in ("Linear", "Conv1D", "Conv2d")]
    row["quantized"] = sum(l["decision"] in ("quantize", "tied") for l in weighted)
    row["layers"] = len(weighted)
    return row


def check_fresh(row, module, fresh, names, kind):
    """ONNX (fresh inputs) against model.qforge.pt and the float module."""
    session = RECIPES[row["recipe"]][2]
    onnx_path = os.path.join(row["out"], "model.qforge.onnx")
    ys = [y for _, y in onnx_check.run_onnx_named(onnx_path, fresh, session_config=session)]
    compiled = torch.jit.load(os.path.join(row["out"], "model.qforge.pt")).eval()
    tensors = [torch.from_numpy(fresh[n]) for n in names]
    with torch.no_grad():
        args = ({n: t for n, t in zip(names, tensors)},) if kind == "dict" else tensors
        ref = compiled(*args).float().numpy()
        flt = module(*args).float().numpy()
    row["onnx_vs_ts_db"] = onnx_check.sqnr_db(ref, ys[0])
    row["onnx_vs_float_db"] = onnx_check.sqnr_db(flt, ys[0])
    row["agreement"] = onnx_check.top1_agreement(ref, ys[0])


def same_params(a, b):
    with open(os.path.join(a, "quant_params.json"), "rb") as f1, open(os.path.join(b, "quant_params.json"), "rb") as f2:
        return f1.read() == f2.read()


def trace_with_cache(work, name):
    """A decoder traced with its cache, and its calibration data: prefill and decode rows."""
    model = decoder(name)
    config = model.config
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = config.hidden_size // config.num_attention_heads
    layers = config.num_hidden_layers
    names = ["input_ids"] + [f"past_{k}_{i}" for i in range(layers) for k in ("key", "value")]

    def empty(rows):
        return [np.zeros((rows, kv_heads, 0, head_dim), np.float32) for _ in range(2 * layers)]

    wrapper = WithCache(model).eval()
    prompts = ids(16, 12, 6)
    with torch.no_grad():
        _, *present = wrapper(torch.from_numpy(prompts), *[torch.from_numpy(t) for t in empty(16)])
        path = os.path.join(work, f"{name}_cache.pt")
        torch.jit.trace(wrapper, (torch.from_numpy(ids(2, 8, 7)), *[torch.from_numpy(t) for t in empty(2)]),
                        check_trace=False).save(path)
    data = os.path.join(work, f"{name}_cache.h5")
    write_samples(data, "tuple", names, {"prefill": dict(zip(names, [prompts] + empty(16))),
                                         "decode": dict(zip(names, [ids(16, 1, 8)] + [t.numpy() for t in present]))})
    return model, path, data, names, empty


def generate_with_cache(work, name, cached=None):
    """The cached decoder compiled INT8 for onnxruntime on the CPU: greedy tokens with the cache in
    onnxruntime against model.qforge.pt's without a cache (and the float model's)."""
    model, path, data, names, empty = cached or trace_with_cache(work, name)
    row = compile_once(work, name + "_cache", "int8_ort", "cpu", 1, path, data)
    if row["exit"] != 0:
        return row
    onnx_path = os.path.join(row["out"], "model.qforge.onnx")
    prompt, steps = ids(2, 6, 9), 8
    past, current, tokens = empty(2), prompt, []
    for _ in range(steps):
        ys = onnx_check.run_onnx(onnx_path, dict(zip(names, [current] + past)), batch_size=0)
        token = ys[0][:, -1].argmax(-1)[:, None].astype(np.int64)
        tokens.append(token)
        current, past = token, ys[1:]
    compiled = torch.jit.load(os.path.join(row["out"], "model.qforge.pt")).eval()
    without_cache = greedy(lambda s: compiled(s, *[torch.from_numpy(t) for t in empty(s.shape[0])])[0], prompt, steps)
    float_tokens = greedy(Logits(model), prompt, steps)
    with_cache = np.concatenate(tokens, 1)
    row["generated_equal"] = bool(np.array_equal(with_cache, without_cache))
    row["float_token_agreement"] = float(np.mean(with_cache == float_tokens))
    return row


def greedy(step, prompt, steps):
    """Greedy tokens of `step` (ids -> logits), the whole sequence each step (no cache)."""
    sequence, out = torch.from_numpy(prompt), []
    with torch.no_grad():
        for _ in range(steps):
            token = step(sequence)[:, -1].argmax(-1, keepdim=True)
            out.append(token.numpy())
            sequence = torch.cat([sequence, token], 1)
    return np.concatenate(out, 1)


# --- running a model's recipes -------------------------------------------------------------------

def devices():
    return (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]


def run_model(name, work, jobs=4, built=None, cached=None):
    model_path, module, data, names, kind, fresh = built or build(name, work)
    plans = [(r, d, 1) for r in RECIPES for d in devices()] + [("int8_ort", "cpu", 2)]
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        rows = list(pool.map(lambda p: compile_once(work, name, *p, model_path, data), plans))
    for row in rows:
        if row["exit"] == 0:
            try:
                check_fresh(row, module, fresh, names, kind)
            except Exception as e:  # an ONNX file onnxruntime cannot run
                row["error"] = f"onnxruntime: {str(e).strip().splitlines()[-1][:300]}"
    one = next((r for r in rows if r["recipe"] == "int8_ort" and r["device"] == "cpu" and r["ranks"] == 1), None)
    two = next((r for r in rows if r["ranks"] == 2), None)
    if one and two and one["exit"] == 0 and two["exit"] == 0:
        two["identical_to_1_rank"] = same_params(one["out"], two["out"])
    if name in DECODERS:
        rows.append(generate_with_cache(work, name, cached))
    return rows


def failures(rows):
    bad = []
    for r in rows:
        label = f"{r['model']} {r['recipe']} {r['device']} {r['ranks']} rank(s)"
        if r["exit"] != 0 or "error" in r:
            bad.append(f"{label}: exit {r['exit']}: {r.get('error')}")
            continue
        if r.get("generated_equal") is False:
            bad.append(f"{label}: generation with the cache differs from generation without it")
        if r.get("identical_to_1_rank") is False:
            bad.append(f"{label}: quant_params.json differs from the 1-rank compile's")
        if "onnx_vs_ts_db" in r and r["onnx_vs_ts_db"] < MIN_ONNX_VS_TORCHSCRIPT_DB:
            bad.append(f"{label}: ONNX against model.qforge.pt {r['onnx_vs_ts_db']:.1f} dB")
        floor = RECIPES[r["recipe"]][3]
        if r.get("vs_float_db") is not None and r["vs_float_db"] < floor:
            bad.append(f"{label}: compiled against float {r['vs_float_db']:.1f} dB < {floor}")
    return bad


def table(rows):
    def db(v):
        return "-" if v is None else ("inf" if v == float("inf") else f"{v:.1f}")
    lines = ["| model | recipe | device | ranks | exit | linears quantized | compiled vs float dB | "
             "ONNX vs model.qforge.pt dB (fresh) | next-token agreement | ONNX vs float dB | s | note |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        note = r.get("error", "")
        if "identical_to_1_rank" in r:
            note = "quant_params.json identical to 1 rank" if r["identical_to_1_rank"] else "differs from 1 rank"
        if "generated_equal" in r:
            note = ("cache (onnxruntime): the tokens of model.qforge.pt without cache" if r["generated_equal"]
                    else "cache: generation differs from model.qforge.pt without cache") + \
                f"; {r['float_token_agreement']:.0%} of the float model's tokens"
        agreement = f"{r['agreement']:.3f}" if "agreement" in r else "-"
        lines.append(f"| {r['model']} | {r['recipe']} | {r['device']} | {r['ranks']} | {r['exit']} | "
                     f"{r.get('quantized', '-')}/{r.get('layers', '-')} | {db(r.get('vs_float_db'))} | "
                     f"{db(r.get('onnx_vs_ts_db'))} | {agreement} | "
                     f"{db(r.get('onnx_vs_float_db'))} | {r['seconds']:.0f} | {note} |")
    return "\n".join(lines)


def check_model(name):
    if transformers is None:
        pytest.skip("transformers is not installed (the GPU image has it)")
    try:
        onnx_check.require_onnxruntime()
    except onnx_check.Skip as e:
        pytest.skip(str(e))
    with tempfile.TemporaryDirectory(prefix=f"qforge-hf-{name}-") as work:
        rows = run_model(name, work)
        print("\n" + table(rows))
        bad = failures(rows)
        assert not bad, "\n".join(bad)


def test_gpt2():
    check_model("gpt2")


def test_llama_sdpa():
    check_model("llama_sdpa")


def test_llama_eager():
    check_model("llama_eager")


def test_qwen2():
    check_model("qwen2")


def test_mistral():
    check_model("mistral")


def test_opt():
    check_model("opt")


def test_bert():
    check_model("bert")


def test_vit():
    check_model("vit")


def test_llama_bf16():
    check_model("llama_bf16")


def test_timm():
    for name in ("timm_convnext_atto", "timm_efficientnet_b0", "timm_deit_tiny"):
        check_model(name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", required=True)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--only", default="")
    parser.add_argument("--log", help="write every compile's output here")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else MODELS
    rows = []
    with tempfile.TemporaryDirectory(prefix="qforge-hf-") as work:
        # Traced one after the other (the tracer keeps process-wide state), compiled in parallel.
        built = {n: build(n, work) for n in names}
        cached = {n: trace_with_cache(work, n) for n in names if n in DECODERS}
        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs // 4)) as pool:
            for model_rows in pool.map(lambda n: run_model(n, work, 4, built[n], cached.get(n)), names):
                rows += model_rows
                print(table(model_rows), flush=True)
    text = table(rows)
    if args.log:
        with open(args.log, "w") as f:
            for r in rows:
                f.write(f"=== {r['model']} {r['recipe']} {r['device']} {r['ranks']}\n{r.get('log', '')}\n")
    with open(args.table, "w") as f:
        f.write(f"transformers {transformers.__version__}, torch {torch.__version__}, "
                f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}\n\n{text}\n")
    bad = failures(rows)
    print("\n".join(bad) if bad else "every compile passed its checks")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
