"""GPTQ as a user runs it: the compiled weights against a reference written here
with plain torch ops (the same Hessian, the same column order), the same result on
1 to 4 ranks, and what happens where GPTQ cannot apply.
Each test_* function is a ctest case (gptq_<case>)."""
import json
import os
import sys

import h5py
import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import qforge_testing as qt  # noqa: E402
from qforge_testing import ASSETS, check, contains, run, write_config  # noqa: E402

# One fine-tuning step at a vanishing learning rate: the adapters stay at zero, so the
# fine-tuned model is exactly the one fine-tuning started from.
VANISHING_FINE_TUNE = ("compile_options: {fine_tune: {enabled: true, steps: 1, batch_size: 8, warmup_steps: 0, "
                       "learning_rate: 1.0e-12}}\n")
MODEL = f"{ASSETS}/wide_mlp_traced.pt"  # fc1 64->128, fc2 128->128, head 128->10 (make_test_assets.py)
BATCH = 8


@pytest.fixture(autouse=True)
def work():
    with qt.work_dir("qforge-gptq-") as path:
        yield path


def gptq_config(weights, out="out", activations="{enabled: false}", extra=""):
    return write_config("gptq.yaml", f"""
model: {{path: {MODEL}}}
out_dir: {out}
calibration_inputs: {{files: [{ASSETS}/vectors64.h5], batch_size: {BATCH}}}
deployment_settings: {{target: libtorch}}
quantization_settings:
  weights: {weights}
  activations: {activations}
""" + extra)


def layer_inputs():
    """Every layer's input on the calibration rows, computed from the float weights
    as WideMlp.forward computes it."""
    model = torch.jit.load(MODEL)
    with h5py.File(f"{ASSETS}/vectors64.h5") as f:
        x = torch.from_numpy(f["samples/all/x"][:])

    def linear(layer, v):
        return torch.nn.functional.linear(v, layer.weight, layer.bias)
    inputs = {"fc1": [], "fc2": [], "head": []}
    with torch.no_grad():
        for b in range(0, len(x), BATCH):  # batch by batch, as calibration computes them
            inputs["fc1"].append(x[b:b + BATCH])
            inputs["fc2"].append(torch.nn.functional.gelu(linear(model.fc1, inputs["fc1"][-1])))
            inputs["head"].append(torch.nn.functional.gelu(linear(model.fc2, inputs["fc2"][-1])) + inputs["fc2"][-1])
    return model, {name: torch.cat(batches) for name, batches in inputs.items()}


def hessian(x):
    """XᵀX / N in float64, summed batch by batch as calibration reads them."""
    h = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
    for b in range(0, len(x), BATCH):
        rows = x[b:b + BATCH].double()
        h += rows.t() @ rows
    return h / len(x)


def grid(rows, bits, symmetric):
    """Per-row scale (float32) and zero point of a signed grid from the rows' min/max,
    as qforge's minmax observer chooses them."""
    qmin, qmax = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    lo = rows.min(1).values.clamp(max=0)
    hi = rows.max(1).values.clamp(min=0)
    tiny = torch.finfo(torch.float32).tiny * 1e6
    if symmetric:
        scale = (torch.maximum(-lo, hi) / ((qmax - qmin) // 2)).clamp(min=tiny).float()
        zero = torch.zeros_like(scale)
    else:
        scale = ((hi - lo) / (qmax - qmin)).clamp(min=tiny).float()
        zero = (qmin - torch.round(lo / scale.double())).clamp(qmin, qmax).float()
    return scale, zero, qmin, qmax


def round_to(w, scale, zero, qmin, qmax):
    """ATen's fake quantization: (clamp(round(w · (1/s)) + z) − z) · s in float32."""
    inv = 1.0 / scale
    return ((torch.clamp(torch.round(w.float() * inv) + zero, qmin, qmax) - zero) * scale).double()


def without_dead_inputs(weight, h):
    """The weight and Hessian in float64, inputs that are always zero removed: their weights become
    zero and their diagonal 1, as GPTQ's and SparseGPT's solves start."""
    w = weight.double().clone()
    h = h.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    return w, h


def gptq_reference(weight, h, bits, group, symmetric, act_order, dampening=0.01):
    """GPTQ column by column (Frantar et al., 2022), every step a plain torch op."""
    w, h = without_dead_inputs(weight, h)
    columns = w.shape[1]
    order = torch.arange(columns)
    if act_order:
        order = torch.sort(torch.diag(h), descending=True, stable=True).indices
    groups = {}
    if group and act_order:  # static groups of the weight before the solve
        for g in range(columns // group):
            groups[g] = grid(w[:, g * group:(g + 1) * group], bits, symmetric)
    whole = grid(w, bits, symmetric) if not group else None
    w, h = w[:, order], h[order][:, order]
    h += dampening * torch.diag(h).mean() * torch.eye(columns, dtype=torch.float64)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.zeros_like(w)
    for i in range(columns):
        if group and not act_order and i % group == 0:
            groups[i // group] = grid(w[:, i:i + group], bits, symmetric)
        params = groups[int(order[i]) // group] if group else whole
        q[:, i] = round_to(w[:, i], *params)
        error = (w[:, i] - q[:, i]) / u[i, i]
        w[:, i:] -= error.unsqueeze(1) @ u[i, i:].unsqueeze(0)
    q = q[:, torch.argsort(order)]
    scales = torch.stack([groups[g][0] for g in sorted(groups)], 1).reshape(-1) if group else whole[0]
    return q.float(), scales


class Block(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.up = torch.nn.Linear(width, 2 * width)
        self.down = torch.nn.Linear(2 * width, width)

    def forward(self, x):
        return x + self.down(torch.relu(self.up(x)))


class Stack(torch.nn.Module):
    """Two repeated blocks and a head: GPTQ solves blocks.0, then blocks.1 on its outputs, then the head."""

    def __init__(self, width=16):
        super().__init__()
        self.blocks = torch.nn.ModuleList([Block(width) for _ in range(2)])
        self.head = torch.nn.Linear(width, 4)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def stack_inputs(model, x, solved):
    """Every layer's input, batch by batch, with the weights in `solved` replacing the float ones."""
    weights = {name: solved.get(name, getattr_path(model, name).weight) for name in
               ("blocks.0.up", "blocks.0.down", "blocks.1.up", "blocks.1.down", "head")}
    inputs = {name: [] for name in weights}

    def linear(name, v):
        inputs[name].append(v)
        return torch.nn.functional.linear(v, weights[name], getattr_path(model, name).bias)
    with torch.no_grad():
        for b in range(0, len(x), BATCH):
            h = x[b:b + BATCH]
            for k in range(2):
                h = h + linear(f"blocks.{k}.down", torch.relu(linear(f"blocks.{k}.up", h)))
            linear("head", h)
    return {name: torch.cat(v) for name, v in inputs.items()}


def getattr_path(module, name):
    for part in name.split("."):
        module = getattr(module, part)
    return module


def compiled_layers(out):
    compiled = torch.jit.load(os.path.join(qt.WORK, out, "model.qforge.pt"))
    params = json.load(open(os.path.join(qt.WORK, out, "quant_params.json")))
    return compiled, {layer["name"]: layer for layer in params["layers"]}


@pytest.mark.parametrize("bits,group,symmetric,act_order", [
    (4, 0, True, False), (4, 32, True, False), (4, 32, True, True), (3, 0, False, True)])
def test_gptq_matches_reference(bits, group, symmetric, act_order):
    granularity = f"granularity: group, group_size: {group}" if group else "granularity: channel"
    out = run(["compile", gptq_config(f"{{bits: {bits}, {granularity}, symmetric: {str(symmetric).lower()}, "
                                      f"algorithm: gptq, gptq: {{act_order: {str(act_order).lower()}}}}}")])
    contains(out, "the model has no repeated blocks")  # fc1, fc2, head: one step on the float model's inputs
    compiled, params = compiled_layers("out")
    model, inputs = layer_inputs()
    for name, x in inputs.items():
        weight = getattr(model, name).weight.detach()
        expected, scales = gptq_reference(weight, hessian(x), bits, group, symmetric, act_order)
        got = getattr(compiled, name).weight.detach()
        check(torch.equal(torch.tensor(params[name]["weights"]["scale"], dtype=torch.float32), scales),
              f"{name}: scales differ from the reference")
        differ = (got != expected).sum().item()
        check(differ == 0, f"{name}: {differ} of {got.numel()} weights differ from the reference GPTQ")
        check(params[name]["weights"]["algorithm"] == "gptq", f"{name}: algorithm not reported")
        if not group:  # GPTQ's objective: the layer's output error on the calibration data, below rounding's
            scale, zero, qmin, qmax = grid(weight.double(), bits, symmetric)
            rtn = round_to(weight, scale.unsqueeze(1), zero.unsqueeze(1), qmin, qmax).float()
            error = ((x @ (got - weight).t()) ** 2).mean()
            rtn_error = ((x @ (rtn - weight).t()) ** 2).mean()
            check(error < rtn_error, f"{name}: GPTQ's output error {error} is not below rounding's {rtn_error}")


def test_gptq_identical_on_1_to_4_ranks():
    # Activations quantized too: the Hessian shares the input observer with their range.
    weights = "{bits: 4, granularity: group, group_size: 32, algorithm: gptq, gptq: {act_order: true}}"
    files = {}
    for ranks in (0, 2, 3, 4):
        out = f"r{ranks}"
        run(["compile", gptq_config(weights, out=out, activations="{enabled: true}")], ranks=ranks, timeout=240)
        files[ranks] = [open(os.path.join(qt.WORK, out, "quant_params.json"), "rb").read(),
                        {k: v for k, v in torch.jit.load(os.path.join(qt.WORK, out, "model.qforge.pt"))
                         .state_dict().items()}]
    for ranks in (2, 3, 4):
        check(files[ranks][0] == files[0][0], f"quant_params.json on {ranks} ranks differs from 1 rank")
        for key, value in files[0][1].items():
            check(torch.equal(files[ranks][1][key], value), f"{key} on {ranks} ranks differs from 1 rank")
    summary = open(os.path.join(qt.WORK, "r4", "summary.txt")).read()
    contains(summary, "quantize (gptq)")
    report = json.load(open(os.path.join(qt.WORK, "r4", "report.json")))
    phases = [p["phase"] for p in report["phases"]]
    check({"gptq: ranges", "gptq: Hessians", "gptq: solve"} <= set(phases), f"GPTQ's phases in report.json: {phases}")


def test_gptq_rounds_other_layers_to_nearest_with_a_note():
    # The tuple model's Embedding cannot be solved by GPTQ; its Linear layers are.
    cfg = write_config("tuple.yaml", f"""
model: {{path: {ASSETS}/tuple_model.pt}}
calibration_inputs: {{files: [{ASSETS}/text_tuple.h5], batch_size: 4}}
deployment_settings: {{target: libtorch}}
quantization_settings: {{weights: {{bits: 4, algorithm: gptq}}, activations: {{enabled: false}}}}
""")
    out = run(["compile", cfg])
    contains(out, "gptq works on Linear layers; 1 other layer(s) are rounded to nearest: embed (Embedding)")
    summary = open(os.path.join(qt.WORK, "qforge_out", "summary.txt")).read()
    contains(summary, "quantize (gptq)")
    plan = run(["compile", cfg, "--dry-run", "--set", "out_dir=plan"])
    contains(plan, "quantize w4/channel gptq a-fp")


def test_gptq_needs_calibration():
    cfg = gptq_config("{bits: 4, algorithm: gptq}", extra="compile_options: {ptq: false}\n")
    out = run(["compile", cfg], expect=3)
    contains(out, "chooses its weight with gptq, whose statistics only calibration measures")
    # A blocks glob that names nothing is refused before any calibration pass.
    out = run(["compile", gptq_config("{bits: 4, algorithm: gptq, gptq: {blocks: 'layers.*'}}")], expect=3)
    contains(out, "gptq.blocks: 'layers.*' names no layer of the model")
    check("calibration" not in out, f"refused only after calibrating:\n{out}")
    out = run(["compile", gptq_config("{bits: 4}", activations="{algorithm: gptq}")], expect=3)
    contains(out, "unknown key 'quantization_settings.activations.algorithm'")


def test_qa_lora_starts_from_gptq_weights():
    # One step at a vanishing learning rate leaves the adapters at zero: the
    # fine-tuned model is then exactly the GPTQ one, not the rounded float one.
    weights = "{bits: 4, algorithm: gptq}"
    run(["compile", gptq_config(weights, out="solved")])
    run(["compile", gptq_config(weights, out="tuned", extra=VANISHING_FINE_TUNE)])
    solved, _ = compiled_layers("solved")
    tuned, params = compiled_layers("tuned")
    for name in ("fc1", "fc2", "head"):
        check(params[name].get("fine_tuned"), f"{name} was not fine-tuned")
        check(torch.equal(getattr(tuned, name).weight, getattr(solved, name).weight),
              f"{name}: the fine-tuned weight did not start from the GPTQ weight")


@pytest.mark.parametrize("blocks,offload", [("auto", "auto"), ("auto", "cpu"), ("none", "auto")])
def test_gptq_solves_blocks_in_order(blocks, offload):
    from qforge_h5 import write_samples
    torch.manual_seed(0)
    model = torch.jit.script(Stack().eval())
    model.save(os.path.join(qt.WORK, "stack.pt"))
    x = torch.randn(48, 16)
    write_samples(os.path.join(qt.WORK, "stack.h5"), "tensor", ["x"], {"all": {"x": x.numpy()}})
    cfg = write_config("stack.yaml", f"""
model: {{path: stack.pt}}
calibration_inputs: {{files: [stack.h5], batch_size: {BATCH}}}
deployment_settings: {{target: libtorch}}
quantization_settings:
  weights: {{bits: 4, algorithm: gptq, gptq: {{blocks: {blocks}, offload: {offload}}}}}
  activations: {{enabled: false}}
""")
    out = run(["compile", cfg])
    if blocks == "auto":  # blocks.1 and the head run on what blocks.0 passed on, not on the model's inputs
        contains(out, "gptq blocks.1: block inputs kept")
    compiled, params = compiled_layers("qforge_out")
    steps = [["blocks.0.up", "blocks.0.down"], ["blocks.1.up", "blocks.1.down"], ["head"]]
    if blocks == "none":
        steps = [sum(steps, [])]
    else:
        contains(out, "gptq: 5 layers in 3 step(s)")
    solved = {}
    for step in steps:  # each step's inputs come from the model with the earlier steps solved
        inputs = stack_inputs(model, x, solved)
        for name in step:
            weight = getattr_path(model, name).weight.detach()
            solved[name], _ = gptq_reference(weight, hessian(inputs[name]), 4, 0, True, False)
    for name, expected in solved.items():
        got = getattr_path(compiled, name).weight.detach()
        differ = (got != expected).sum().item()
        check(differ == 0, f"blocks {blocks}: {name}: {differ} of {got.numel()} weights differ from the reference")


def llama_config(out, extra=""):
    from qforge_h5 import write_samples
    rng = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 100, (36, 12), generator=rng)
    write_samples(os.path.join(qt.WORK, "ids.h5"), "tensor", ["ids"], {"t12": {"ids": ids.numpy()}})
    return write_config("llama.yaml", f"""
model: {{path: {ASSETS}/llama_decoder_scripted.pt}}
out_dir: {out}
calibration_inputs: {{files: [ids.h5], batch_size: 4}}
deployment_settings: {{target: libtorch}}
quantization_settings:
  weights: {{bits: 4, granularity: group, group_size: 16, algorithm: gptq}}
  activations: {{enabled: false}}
layer_quantization_settings:
  embed: {{skip: true}}
""" + extra)


def test_gptq_keeps_block_inputs_the_same_on_any_rank_count():
    # Three Llama-style blocks whose rotary tables and mask, made before the first
    # block, pass from block to block with the hidden states.
    files = {}
    for ranks in (0, 3):
        out = run(["compile", llama_config(f"r{ranks}")], ranks=ranks, timeout=240)
        contains(out, "gptq: 22 layers in 4 step(s)")
        contains(out, "gptq layers.2: block inputs kept")
        files[ranks] = open(os.path.join(qt.WORK, f"r{ranks}", "quant_params.json"), "rb").read()
    check(files[3] == files[0], "quant_params.json on 3 ranks differs from 1 rank")
    report = json.load(open(os.path.join(qt.WORK, "r3", "report.json")))
    phases = {p["phase"]: p for p in report["phases"]}
    check("gptq layers.1: inputs" in phases, f"report.json phases: {list(phases)}")
    for p in phases.values():
        peaks = p["peak_bytes_per_rank"]
        check(len(peaks) == 3 and min(peaks) > 0, f"{p['phase']}: peak memory per rank {peaks}")


def test_gptq_on_blocks_called_twice_computes_their_inputs_again():
    class Twice(torch.nn.Module):  # every block runs twice: the graph cannot be cut after one
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([Block(16) for _ in range(2)])
            self.head = torch.nn.Linear(16, 4)

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            for block in self.blocks:
                x = block(x)
            return self.head(x)
    torch.manual_seed(0)
    torch.jit.script(Twice().eval()).save(os.path.join(qt.WORK, "twice.pt"))
    from qforge_h5 import write_samples
    write_samples(os.path.join(qt.WORK, "x.h5"), "tensor", ["x"], {"all": {"x": torch.randn(16, 16).numpy()}})
    cfg = write_config("twice.yaml", f"""
model: {{path: twice.pt}}
calibration_inputs: {{files: [x.h5], batch_size: {BATCH}}}
deployment_settings: {{target: libtorch}}
quantization_settings:
  weights: {{bits: 4, algorithm: gptq}}
  activations: {{enabled: false}}
""")
    out = run(["compile", cfg])
    contains(out, "block 'blocks.0' is called more than once; every block's inputs are computed from the model's "
             "inputs again")
    contains(out, "gptq: 5 layers in 3 step(s)")
