"""Language models as Hugging Face transformers 5 writes them (tests/models/hf_like.py: positions
by arange and cumsum, masks by advanced indexing, diff and where, rotary tables, grouped-query
attention by expand and repeat_interleave, token types by gather, a key/value cache), traced on
this machine's torch, compiled by qforge, and their ONNX files run in onnxruntime against
model.qforge.pt on fresh inputs: token ids the calibration data does not hold, at a length
between the data's two (prefill and decode through one file). A decoder exported with its cache
generates token by token in onnxruntime the tokens the compiled model generates without a cache.
Each test_* function is a ctest case (lm_<case>); cases that run a file skip without onnxruntime."""
import json
import os
import sys

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "python"))
sys.path.insert(0, os.path.join(HERE, "..", "models"))
import hf_like  # noqa: E402
import onnx_check  # noqa: E402
import qforge_testing as qt  # noqa: E402
from onnx_check import Skip, graph_inputs, load_onnx, run_onnx, run_onnx_named, sqnr_db, top1_agreement  # noqa: E402
from qforge_testing import check, write_config  # noqa: E402
from qforge_h5 import write_samples  # noqa: E402

VOCAB = hf_like.VOCAB
# model.qforge.onnx against model.qforge.pt, per output. These files compute as their TorchScript
# model does (about 135 dB, float rounding); 47 dB was onnxruntime quantizing a tied output
# layer's float input on its own, which the bound must catch.
MIN_SQNR_DB = 60.0
MIN_AGREEMENT = 0.97        # next-token agreement of the two
INT4_SESSION = {"session.qdq_matmulnbits_accuracy_level": "1"}  # float compute, as the weight-only file states


@pytest.fixture(autouse=True)
def work():
    with qt.work_dir("qforge-lm-") as path:
        yield path


def require_onnxruntime():
    try:
        return onnx_check.require_onnxruntime()
    except Skip as e:
        pytest.skip(str(e))


def ids(rows, length, seed):
    return np.random.default_rng(seed).integers(1, VOCAB, (rows, length)).astype(np.int64)


def save_traced(name, module, example):
    path = os.path.join(qt.WORK, name + ".pt")
    with torch.no_grad():
        torch.jit.trace(module, example, strict=False).save(path)
    return path


def compile_lm(name, model, data, target, quantization="{}", extra=""):
    """Compiles with the data as calibration and evaluation inputs; returns (out_dir, report)."""
    cfg = write_config(name + ".yaml", f"""
model: {{path: {model}}}
out_dir: {name}
calibration_inputs: {{files: [{data}], batch_size: 8}}
evaluation_inputs: {{files: [{data}], batch_size: 8}}
deployment_settings: {{target: {target}}}
quantization_settings: {quantization}
""" + extra)
    qt.run(["compile", cfg], timeout=400)
    out = os.path.join(qt.WORK, name)
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)
    linears = [l for l in report["layers"] if l["type"] == "Linear"]
    quantized = [l["name"] for l in linears if l["decision"] == "quantize"]
    check(len(quantized) + sum(l["decision"] == "tied" for l in linears) == len(linears),
          f"{name}: linears left in floating point: {[l['name'] for l in linears if l['name'] not in quantized]}")
    check_runs_where_its_inputs_are(name, os.path.join(out, "model.qforge.pt"))
    return out, report


def check_runs_where_its_inputs_are(name, path):
    """The trace fixed devices and tables as constants of the CPU; the artifact holds none of them, so
    Module.to / map_location move everything it computes with (tests/gpu runs one on a GPU)."""
    graph = torch.jit.load(path).inlined_graph
    fixed = [n for n in graph.nodes() if n.kind() == "prim::Constant" and
             (str(n.output().type()) == "Device" or
              (n.output().type().kind() == "TensorType" and n.output().toIValue().dim() > 0))]
    check(not fixed, f"{name}: model.qforge.pt keeps devices or tables as constants: {[str(n) for n in fixed][:3]}")


def torchscript(out, *arrays):
    model = torch.jit.load(os.path.join(out, "model.qforge.pt")).eval()
    with torch.no_grad():
        y = model(*[torch.from_numpy(a) for a in arrays])
    return [t.numpy() for t in (y if isinstance(y, (tuple, list)) else [y])]


def check_fresh(label, out, feeds, session_config=None):
    """model.qforge.onnx against model.qforge.pt on `feeds` (name -> array, the method's order)."""
    onnx_path = os.path.join(out, "model.qforge.onnx")
    if session_config:
        ys = [y for _, y in run_onnx_named(onnx_path, feeds, session_config=session_config)]
    else:
        ys = run_onnx(onnx_path, feeds)
    refs = torchscript(out, *feeds.values())
    check(len(ys) == len(refs), f"{label}: {len(ys)} ONNX outputs, {len(refs)} TorchScript outputs")
    for i, (ref, y) in enumerate(zip(refs, ys)):
        check(ref.shape == y.shape, f"{label}: output {i}: ONNX {y.shape}, TorchScript {ref.shape}")
        sqnr = sqnr_db(ref, y)
        print(f"{label}: output {i} {list(y.shape)}: {sqnr:.1f} dB against model.qforge.pt", end="")
        if i == 0:
            agreement = top1_agreement(ref, y)
            print(f", next-token agreement {agreement:.4f}", end="")
            check(agreement >= MIN_AGREEMENT, f"{label}: next-token agreement {agreement:.4f} < {MIN_AGREEMENT}")
        print()
        check(sqnr >= MIN_SQNR_DB, f"{label}: output {i}: {sqnr:.1f} dB < {MIN_SQNR_DB} dB")


def test_llama_prefill_at_any_length():
    """Llama's shape, untied and tied: W8A8 for onnxruntime and 4-bit GPTQ for tensorrt_llm, data
    at lengths 6 and 12, the ONNX file run at length 9 and at 1 (a decode step without cache)."""
    require_onnxruntime()
    data = os.path.join(qt.WORK, "ids.h5")
    write_samples(data, "tensor", ["input_ids"], {"len06": {"input_ids": ids(24, 6, 0)},
                                                  "len12": {"input_ids": ids(16, 12, 1)}})
    recipes = {"onnxruntime": ("{}", None),
               "tensorrt_llm": ("{weights: {algorithm: gptq, group_size: 64}}", INT4_SESSION)}
    for tied in (False, True):
        torch.manual_seed(3)
        model = save_traced(f"llama_tied{int(tied)}", hf_like.Logits(hf_like.Llama(width=64, tied=tied).eval()),
                            torch.from_numpy(ids(2, 8, 9)))
        for target, (quantization, session) in recipes.items():
            label = f"llama tied={tied} {target}"
            out, report = compile_lm(f"llama{int(tied)}_{target}", model, data, target, quantization)
            inputs = graph_inputs(load_onnx(os.path.join(out, "model.qforge.onnx")))
            check(inputs[0][1] == ["batch", "sequence"], f"{label}: ONNX input axes {inputs[0][1]}")
            tied_layers = [l["name"] for l in report["layers"] if l["decision"] == "tied"]
            check(tied_layers == (["model.lm_head"] if tied else []), f"{label}: tied layers {tied_layers}")
            for length in (9, 1):
                check_fresh(f"{label} length {length}", out, {"input_ids": ids(3, length, 10 + length)}, session)


def test_gpt2_conv1d_layers_compute_as_linear_layers():
    """GPT-2's Conv1D (weight [inputs, outputs], addmm) is quantized as a Linear layer: per output
    channel for onnxruntime, 4-bit GPTQ in groups for tensorrt_llm."""
    require_onnxruntime()
    data = os.path.join(qt.WORK, "ids.h5")
    write_samples(data, "tensor", ["input_ids"], {"len06": {"input_ids": ids(24, 6, 0)},
                                                  "len12": {"input_ids": ids(16, 12, 1)}})
    torch.manual_seed(6)
    model = save_traced("gpt2", hf_like.Gpt2().eval(), torch.from_numpy(ids(2, 8, 9)))
    recipes = {"onnxruntime": ("{}", None),
               "tensorrt_llm": ("{weights: {algorithm: gptq, group_size: 64}}", INT4_SESSION)}
    for target, (quantization, session) in recipes.items():
        out, report = compile_lm(f"gpt2_{target}", model, data, target, quantization)
        conv1d = [l for l in report["layers"] if l["type"] == "Conv1D"]
        check(len(conv1d) == 8 and all(l["decision"] == "quantize" for l in conv1d),
              f"gpt2 {target}: Conv1D layers {[(l['name'], l['decision'], l.get('reason')) for l in conv1d]}")
        if target == "tensorrt_llm":
            algorithms = {l["name"]: l["weights"]["algorithm"] for l in conv1d}
            check(set(algorithms.values()) == {"gptq"}, f"gpt2: algorithms {algorithms}")
        for length in (9, 1):
            check_fresh(f"gpt2 {target} length {length}", out, {"input_ids": ids(3, length, 20 + length)}, session)


def cache_data(path, model, prompt_rows=16, prompt=8):
    """Prefill rows (ids, an empty cache) and decode rows (one id, the cache the float model made
    of a prompt), as a user would record them."""
    prompts = ids(prompt_rows, prompt, 4)
    with torch.no_grad():
        _, *present = hf_like.WithCache(model)(torch.from_numpy(prompts), *model.empty_cache(prompt_rows))
    names = ["input_ids"] + [f"past_{kind}_{layer}" for layer in range(model.depth) for kind in ("key", "value")]
    empty = [t.numpy() for t in model.empty_cache(prompt_rows)]
    groups = {"prefill": dict(zip(names, [prompts] + empty)),
              "decode": dict(zip(names, [ids(prompt_rows, 1, 5)] + [t.numpy() for t in present]))}
    write_samples(path, "tuple", names, groups)
    return names


def test_llama_decodes_token_by_token_with_its_cache():
    """The cache as inputs and outputs: one ONNX file prefills (empty past) and decodes (one token,
    a past of any length); greedy generation with it in onnxruntime gives the tokens the compiled
    TorchScript model gives without a cache, rerunning the whole sequence at every step."""
    require_onnxruntime()
    torch.manual_seed(4)
    model = hf_like.Llama().eval()
    data = os.path.join(qt.WORK, "cache.h5")
    names = cache_data(data, model)
    traced = save_traced("llama_cache", hf_like.WithCache(model), (torch.from_numpy(ids(2, 8, 6)), *model.empty_cache(2)))
    out, _ = compile_lm("llama_cache", traced, data, "onnxruntime")
    onnx_path = os.path.join(out, "model.qforge.onnx")
    inputs = {name: dims for name, dims, _ in graph_inputs(load_onnx(onnx_path))}
    check(inputs["input_ids"] == ["batch", "sequence"], f"input_ids axes {inputs['input_ids']}")
    check(inputs["past_key_0"] == ["batch", 2, "past_key_0_dim2", 8], f"past_key_0 axes {inputs['past_key_0']}")
    compiled = torch.jit.load(os.path.join(out, "model.qforge.pt")).eval()
    prompt = ids(2, 5, 7)
    steps = 6
    # without a cache: the whole sequence each step, an empty past
    with torch.no_grad():
        no_cache = hf_like.generate(lambda x: compiled(x, *model.empty_cache(x.shape[0]))[0],
                                    torch.from_numpy(prompt), steps).numpy()
    # with the cache, in onnxruntime
    past = [t.numpy() for t in model.empty_cache(2)]
    current, tokens = prompt, []
    for _ in range(steps):
        ys = run_onnx(onnx_path, dict(zip(names, [current] + past)), batch_size=0)
        token = ys[0][:, -1].argmax(-1)[:, None].astype(np.int64)
        tokens.append(token)
        current, past = token, ys[1:]
    with_cache = np.concatenate(tokens, 1)
    print(f"generated without cache (TorchScript): {no_cache.tolist()}; with cache (onnxruntime): {with_cache.tolist()}")
    check(np.array_equal(no_cache, with_cache), "generation with the cache differs from generation without it")
    check(past[0].shape[2] == prompt.shape[1] + steps - 1, f"the cache holds {past[0].shape[2]} positions")
    check_fresh("llama cache decode", out, dict(zip(names, [ids(3, 1, 8)] + [
        np.random.default_rng(9).standard_normal((3, 2, 11, 8)).astype(np.float32) for _ in names[1:]])))


def test_opt_positions_from_cumsum_and_bert_token_types_from_gather():
    """OPT's positions (cumsum of the attention mask, padded rows) and BERT's dict of input_ids and
    attention_mask (token types gathered from a buffer, an additive mask from finfo.min)."""
    require_onnxruntime()
    rng = np.random.default_rng(11)

    def masked(rows, length, seed):
        mask = np.ones((rows, length), np.int64)
        for r in range(rows):
            mask[r, length - rng.integers(0, 3):] = 0
        return ids(rows, length, seed), mask

    torch.manual_seed(5)
    for name, module, kind in (("opt", hf_like.Opt().eval(), "tuple"), ("bert", hf_like.Bert().eval(), "dict")):
        names = ["input_ids", "attention_mask"]
        data = os.path.join(qt.WORK, name + ".h5")
        groups = {f"len{n:02d}": dict(zip(names, masked(16, n, n))) for n in (6, 12)}
        write_samples(data, kind, names, groups)
        example = tuple(torch.from_numpy(a) for a in masked(2, 8, 3))
        model = save_traced(name, module, dict(zip(names, example)) if kind == "dict" else example)
        out, _ = compile_lm(name, model, data, "onnxruntime")
        feeds = dict(zip(names, masked(3, 9, 12)))
        if kind == "dict":  # the ONNX file takes the dict's entries as inputs of their own
            refs = torchscript_dict(out, feeds)
            ys = run_onnx(os.path.join(out, "model.qforge.onnx"), feeds)
            sqnr = sqnr_db(refs, ys[0])
            print(f"{name}: {sqnr:.1f} dB against model.qforge.pt, agreement {top1_agreement(refs, ys[0]):.4f}")
            check(sqnr >= MIN_SQNR_DB, f"{name}: {sqnr:.1f} dB")
        else:
            check_fresh(name, out, feeds)


def torchscript_dict(out, feeds):
    model = torch.jit.load(os.path.join(out, "model.qforge.pt")).eval()
    with torch.no_grad():
        return model({k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()


def test_bfloat16_model_compiles_in_its_dtype():
    """A model held in bfloat16 (transformers' default for language models): W8A8 for onnxruntime and
    4-bit GPTQ for tensorrt_llm. model.qforge.pt keeps bfloat16; its statistics and solves ran in
    float32 and float64; the ONNX file is float32 and matches it within bfloat16's rounding."""
    require_onnxruntime()
    data = os.path.join(qt.WORK, "ids.h5")
    write_samples(data, "tensor", ["input_ids"], {"len06": {"input_ids": ids(24, 6, 0)},
                                                  "len12": {"input_ids": ids(16, 12, 1)}})
    torch.manual_seed(3)
    model = save_traced("llama_bf16", hf_like.Logits(hf_like.Llama(width=64).eval().to(torch.bfloat16)),
                        torch.from_numpy(ids(2, 8, 9)))
    recipes = {"onnxruntime": ("{}", None, 30.0),
               "tensorrt_llm": ("{weights: {algorithm: gptq, group_size: 64}}", INT4_SESSION, 12.0)}
    for target, (quantization, session, float_floor) in recipes.items():
        out, report = compile_lm(f"bf16_{target}", model, data, target, quantization)
        compiled = torch.jit.load(os.path.join(out, "model.qforge.pt"))
        dtypes = {p.dtype for p in compiled.parameters()}
        check(dtypes == {torch.bfloat16}, f"bf16 {target}: model.qforge.pt holds {dtypes}")
        sizes = report["sizes"]
        check(0 < sizes["deployed_bytes"] < sizes["float_bytes"], f"bf16 {target}: sizes {sizes}")
        sqnr = report["evaluation"]["output_sqnr_db"]
        print(f"bf16 {target}: compiled against the bfloat16 model {sqnr:.1f} dB")
        check(sqnr >= float_floor, f"bf16 {target}: {sqnr:.1f} dB against the float model")
        onnx_path = os.path.join(out, "model.qforge.onnx")
        fresh = ids(3, 9, 19)
        y = [v for _, v in run_onnx_named(onnx_path, {"input_ids": fresh}, session_config=session)][0]
        with torch.no_grad():
            ref = compiled(torch.from_numpy(fresh)).float().numpy()
        check(y.dtype == np.float32, f"bf16 {target}: the ONNX file computes in {y.dtype}")
        onnx_sqnr, agreement = sqnr_db(ref, y), top1_agreement(ref, y)
        print(f"bf16 {target}: ONNX (float32) against model.qforge.pt (bfloat16) {onnx_sqnr:.1f} dB, "
              f"next-token agreement {agreement:.4f}")
        check(onnx_sqnr >= 30.0 and agreement >= 0.9, f"bf16 {target}: {onnx_sqnr:.1f} dB, agreement {agreement}")
