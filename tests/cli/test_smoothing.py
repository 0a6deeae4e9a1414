"""AWQ and SmoothQuant as a user runs them, on a small Llama-style decoder with
outlier channels (make_test_assets.py): the scales and weights against references
written here with plain torch ops, the same result on 1 and 3 ranks, the scaled
model in onnxruntime, and what happens where the scales cannot apply.
Each test_* function is a ctest case (smoothing_<case>)."""
import json
import os
import sys

import h5py
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
sys.path.insert(0, os.path.join(HERE, "..", "onnx"))
sys.path.insert(0, HERE)
import qforge_testing as qt  # noqa: E402
from deployed_check import check_deployed  # noqa: E402
from qforge_testing import ASSETS, check, contains, run, write_config  # noqa: E402
from test_gptq import VANISHING_FINE_TUNE, getattr_path, grid, round_to  # noqa: E402

MODEL = f"{ASSETS}/small_decoder_scripted.pt"  # 2 blocks: RMSNorm, q/k/v, o, LayerNorm, SwiGLU; proj, head
DATA = f"{ASSETS}/tokens.h5"  # ids, two sequence lengths
BATCH = 8
GRID = 20


@pytest.fixture(autouse=True)
def work():
    with qt.work_dir("qforge-smoothing-") as path:
        yield path


def config(weights, activations="{enabled: false}", out="out", target="libtorch", extra=""):
    return write_config(f"{out}.yaml", f"""
model: {{path: {MODEL}}}
out_dir: {out}
calibration_inputs: {{files: [{DATA}], batch_size: {BATCH}}}
deployment_settings: {{target: {target}}}
quantization_settings:
  weights: {weights}
  activations: {activations}
layer_quantization_settings: {{embed: {{skip: true}}}}
""" + extra)


def group_inputs():
    """The inputs of blocks.0's q/k/v, gate/up and down, and blocks.1's q/k/v, on every
    calibration row, from the float model."""
    model = torch.jit.load(MODEL)
    ids = []
    with h5py.File(DATA) as f:
        for group in f["samples"]:
            ids.append(torch.from_numpy(f[f"samples/{group}/ids"][:]))
    inputs = {"blocks.0.q": [], "blocks.0.gate": [], "blocks.0.down": [], "blocks.1.q": []}
    with torch.no_grad():
        for batch in ids:
            x = model.embed(batch)
            b0 = getattr_path(model, "blocks.0")
            inputs["blocks.0.q"].append(b0.attn_norm(x))
            q, k, v = b0.q(inputs["blocks.0.q"][-1]), b0.k(inputs["blocks.0.q"][-1]), b0.v(inputs["blocks.0.q"][-1])
            x = x + b0.o(torch.softmax(q @ k.transpose(1, 2) / 4.0, dim=-1) @ v)
            h = b0.mlp_norm(x)
            inputs["blocks.0.gate"].append(h)
            inputs["blocks.0.down"].append(torch.nn.functional.silu(b0.gate(h)) * b0.up(h))
            inputs["blocks.1.q"].append(getattr_path(model, "blocks.1").attn_norm(b0(model.embed(batch))))
    return model, {k: torch.cat([t.reshape(-1, t.shape[-1]) for t in v]) for k, v in inputs.items()}


def members(first):
    block = first.rsplit(".", 1)[0]
    return {"q": [f"{block}.q", f"{block}.k", f"{block}.v"], "gate": [f"{block}.gate", f"{block}.up"],
            "down": [f"{block}.down"]}[first.rsplit(".", 1)[1]]


def rtn_groups(w, group, bits=4):
    """Symmetric signed rounding per group of `group` inputs, as qforge's minmax observer rounds."""
    rows = w.reshape(-1, group)
    scale, zero, qmin, qmax = grid(rows.double(), bits, True)
    return round_to(rows, scale.unsqueeze(1), zero.unsqueeze(1), qmin, qmax).float().reshape(w.shape)


def awq_scales(mean_abs, alpha):
    s = mean_abs.double().pow(alpha).clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


def params_of(out):
    return {layer["name"]: layer for layer in json.load(open(os.path.join(qt.WORK, out, "quant_params.json")))["layers"]}


def check_weights(name, got, expected, exact):
    """Exact where the test computes the layer's input as the model does op for op (the first
    block's q/k/v); deeper inputs differ from the model's in the last bits (attention), which
    can move a scale by one float step: then almost every weight must still agree to 1e-5."""
    if exact:
        differ = (got != expected).sum().item()
        check(differ == 0, f"{name}: {differ} of {got.numel()} weights differ from the reference")
        return
    off = ((got - expected).abs() > 1e-5 * expected.abs().max()).float().mean().item()
    check(off <= 0.01, f"{name}: {100 * off:.1f}% of the weights differ from the reference by more than 1e-5")


def test_awq_matches_reference():
    out = run(["compile", config("{bits: 4, granularity: group, group_size: 16, algorithm: awq}")])
    contains(out, "input scales: 10 group(s)")
    compiled = torch.jit.load(os.path.join(qt.WORK, "out", "model.qforge.pt"))
    params = params_of("out")
    model, inputs = group_inputs()
    chosen = {}
    for first, x in inputs.items():
        mean_abs = x.abs().double().sum(0) / x.shape[0]
        errors = []
        for a in range(GRID):
            s = awq_scales(mean_abs, a / GRID)
            error = torch.zeros((), dtype=torch.float64)
            for name in members(first):
                w = getattr_path(model, name).weight.detach()
                e = (rtn_groups(w * s.float(), 16) / s.float() - w).double()
                error += ((x.double() @ e.t()) ** 2).sum()
            errors.append(error)
        best = int(torch.argmin(torch.stack(errors)))
        scaling = params[first]["input_scaling"]
        check(scaling["method"] == "awq" and abs(scaling["alpha"] - best / GRID) < 1e-12,
              f"{first}: chose exponent {scaling['alpha']}, the reference {best / GRID} (errors {errors})")
        check(best > 0, f"{first}: the reference keeps the input unscaled; the test shows nothing")
        chosen[first] = awq_scales(mean_abs, best / GRID).float()
    for first, s in chosen.items():
        for name in members(first):
            w = getattr_path(model, name).weight.detach() * s
            if name == "blocks.0.up":  # its output rows also take the division of down's input
                w = w / chosen["blocks.0.down"].unsqueeze(1)
            check_weights(name, getattr_path(compiled, name).weight.detach(), rtn_groups(w, 16),
                          exact=first == "blocks.0.q")
    check(params["blocks.0.q"]["input_scaling"]["divided_in"] == "blocks.0.attn_norm", "q/k/v: not folded into RMSNorm")
    check(params["blocks.0.o"]["input_scaling"]["divided_in"] == "explicit multiply", "o: not an explicit multiply")
    check(params["blocks.0.down"]["input_scaling"]["divided_in"] == "blocks.0.up", "down: not folded into up")
    check(params["blocks.0.q"]["weights"]["algorithm"] == "awq", "algorithm not reported")


def test_awq_identical_on_1_and_3_ranks():
    weights = "{bits: 4, granularity: group, group_size: 16, algorithm: awq}"
    files = {}
    for ranks in (0, 3):
        out = f"r{ranks}"
        run(["compile", config(weights, out=out)], ranks=ranks, timeout=240)
        files[ranks] = [open(os.path.join(qt.WORK, out, "quant_params.json"), "rb").read(),
                        torch.jit.load(os.path.join(qt.WORK, out, "model.qforge.pt")).state_dict()]
    check(files[3][0] == files[0][0], "quant_params.json on 3 ranks differs from 1 rank")
    for key, value in files[0][1].items():
        check(torch.equal(files[3][1][key], value), f"{key} on 3 ranks differs from 1 rank")
    summary = open(os.path.join(qt.WORK, "r3", "summary.txt")).read()
    contains(summary, "quantize (awq)")


def test_smoothquant_matches_reference_and_runs_in_onnxruntime():
    activations = "{bits: 8, smoothing: {method: smoothquant, alpha: 0.5}}"
    evaluation = f"evaluation_inputs: {{files: [{DATA}], batch_size: {BATCH}}}\n"
    weights = "{bits: 8, granularity: channel}"
    run(["compile", config(weights, activations, out="smooth", target="onnxruntime", extra=evaluation)])
    run(["compile", config(weights, "{bits: 8}", out="plain", target="onnxruntime", extra=evaluation)])
    compiled = torch.jit.load(os.path.join(qt.WORK, "smooth", "model.qforge.pt"))
    params = params_of("smooth")
    model, inputs = group_inputs()
    for first in ("blocks.0.q", "blocks.0.gate", "blocks.1.q"):
        x = inputs[first]
        weight_max = torch.stack([getattr_path(model, n).weight.detach().abs().amax(0) for n in members(first)])
        s = (x.abs().amax(0).double().pow(0.5) / weight_max.amax(0).double().pow(0.5)).clamp(min=1e-5).float()
        scaling = params[first]["input_scaling"]
        check(scaling["method"] == "smoothquant" and scaling["alpha"] == 0.5, f"{first}: {scaling}")
        for name in members(first):
            w = getattr_path(model, name).weight.detach() * s
            if name == "blocks.0.up":  # its output rows also take the division of down's input
                continue
            scale, zero, qmin, qmax = grid(w.double(), 8, True)
            expected = round_to(w, scale.unsqueeze(1), zero.unsqueeze(1), qmin, qmax).float()
            check_weights(name, getattr_path(compiled, name).weight.detach(), expected, exact=first == "blocks.0.q")
        lo, hi = params[first]["activations"]["range"]  # calibrated on x / s
        smoothed = x / s
        check(abs(hi - max(smoothed.max().item(), 0)) <= 1e-5 * abs(hi) and
              abs(lo - min(smoothed.min().item(), 0)) <= 1e-5 * max(abs(lo), 1e-6),
              f"{first}: input range {lo}..{hi}, the smoothed input's {smoothed.min()}..{smoothed.max()}")
    reports = {name: json.load(open(os.path.join(qt.WORK, name, "report.json"))) for name in ("smooth", "plain")}
    sqnr = {name: r["evaluation"]["output_sqnr_db"] for name, r in reports.items()}
    check(sqnr["smooth"] > sqnr["plain"] + 1.0, f"SmoothQuant did not help W8A8 on outlier channels: {sqnr}")
    check_deployed("smoothquant w8a8", reports["smooth"])  # the explicit divisions run in onnxruntime too
    summary = open(os.path.join(qt.WORK, "smooth", "summary.txt")).read()
    contains(summary, "quantize (smoothquant)")


def test_qa_lora_starts_from_awq_weights():
    # One step at a vanishing learning rate leaves the adapters at zero: the
    # fine-tuned model is then exactly the AWQ one.
    weights = "{bits: 4, granularity: group, group_size: 16, algorithm: awq}"
    run(["compile", config(weights, out="searched")])
    run(["compile", config(weights, out="tuned", extra=VANISHING_FINE_TUNE)])
    searched = torch.jit.load(os.path.join(qt.WORK, "searched", "model.qforge.pt"))
    tuned = torch.jit.load(os.path.join(qt.WORK, "tuned", "model.qforge.pt"))
    for name in ("blocks.0.q", "blocks.1.down", "head"):
        check(torch.equal(getattr_path(tuned, name).weight, getattr_path(searched, name).weight),
              f"{name}: the fine-tuned weight did not start from the AWQ weight")


def test_awq_and_smoothing_refuse_bad_settings_by_name():
    out = run(["compile", config("{bits: 4, algorithm: awq}", extra="compile_options: {ptq: false}\n")], expect=3)
    contains(out, "chooses its weight with awq, whose statistics only calibration measures")
    out = run(["compile", config("{bits: 4, algorithm: awq, awq: {blocks: 'layers.*'}}")], expect=3)
    contains(out, "weights.awq.blocks: 'layers.*' names no layer of the model")
    check("calibration" not in out, f"refused only after calibrating:\n{out}")
    out = run(["compile", config("{bits: 8}", "{smoothing: {method: smoothquant, alpha: 1.5}}")], expect=3)
    contains(out, "quantization_settings.activations.smoothing.alpha: expected a strength from 0 to 1")
    out = run(["compile", config("{bits: 8}", "{smoothing: {method: awq}}")], expect=3)
    contains(out, "smoothing.method")
    # The tuple model's Embedding cannot take AWQ's scales; its Linear layers do.
    cfg = write_config("tuple.yaml", f"""
model: {{path: {ASSETS}/tuple_model.pt}}
calibration_inputs: {{files: [{ASSETS}/text_tuple.h5], batch_size: 4}}
deployment_settings: {{target: libtorch}}
quantization_settings: {{weights: {{bits: 4, algorithm: awq}}, activations: {{enabled: false}}}}
""")
    plan = run(["compile", cfg, "--dry-run", "--set", "out_dir=plan"])
    contains(plan, "awq works on Linear layers; 1 other layer(s) are rounded to nearest: embed (Embedding)",
             "quantize w4/channel awq a-fp")
