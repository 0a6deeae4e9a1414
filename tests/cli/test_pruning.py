"""Pruning as a user runs it: magnitude, Wanda and SparseGPT against references
written here with plain torch ops, unstructured and 2:4; the same masks and weights
on 1 to 4 ranks; masks held through GPTQ, fine-tuning and the ONNX file; the
sensitivity threshold's allocation; and bad settings refused by key and layer.
Each test_* function is a ctest case (pruning_<case>)."""
import json
import os
import sys
from typing import List, Optional

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "onnx"))
import qforge_testing as qt  # noqa: E402
from qforge_testing import ASSETS, check, contains, run, write_config  # noqa: E402
from test_gptq import BATCH, MODEL, hessian, layer_inputs, without_dead_inputs  # noqa: E402

LAYERS = ("fc1", "fc2", "head")  # wide_mlp: 64->128, 128->128, 128->10


@pytest.fixture(autouse=True)
def work():
    with qt.work_dir("qforge-pruning-") as path:
        yield path


def pruning_config(pruning, out="out", extra=""):
    return write_config("pruning.yaml", f"""
model: {{path: {MODEL}}}
out_dir: {out}
calibration_inputs: {{files: [{ASSETS}/vectors64.h5], batch_size: {BATCH}}}
pruning_settings: {pruning}
""" + extra)


def keep_highest(score, sparsity, n, m, per_row):
    """The mask keeping the highest scores: `sparsity` of the tensor (or of each row)
    pruned, or n kept of every m columns of each row; ties by position."""
    mask = torch.ones_like(score, dtype=torch.bool)
    if m:
        groups = score.reshape(score.shape[0], -1, m)
        order = torch.sort(groups, dim=2, stable=True).indices
        return mask.reshape(groups.shape).scatter_(2, order[:, :, :m - n], False).reshape(score.shape)
    flat = score if per_row else score.reshape(1, -1)
    pruned = round(sparsity * flat.shape[1])
    order = torch.sort(flat, dim=1, stable=True).indices
    return mask.reshape(flat.shape).scatter_(1, order[:, :pruned], False).reshape(score.shape)


def sparsegpt_reference(weight, h, sparsity, n, m, block=128, dampening=0.01):
    """SparseGPT (Frantar & Alistarh, 2023) column by column, every step a plain torch op."""
    w, h = without_dead_inputs(weight, h)
    columns = w.shape[1]
    h += dampening * torch.diag(h).mean() * torch.eye(columns, dtype=torch.float64)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    mask = torch.ones_like(w, dtype=torch.bool)
    q = torch.zeros_like(w)
    for b0 in range(0, columns, block):
        b1 = min(b0 + block, columns)
        wb, ub = w[:, b0:b1].clone(), u[b0:b1, b0:b1]
        errors = torch.zeros_like(wb)
        if not m:  # a block's share of its weights, where removing them costs least
            cost = wb ** 2 / torch.diag(ub).unsqueeze(0) ** 2
            mask[:, b0:b1] = keep_highest(cost, sparsity, 0, 0, per_row=False)
        for i in range(b1 - b0):
            c = b0 + i
            if m and c % m == 0:
                cost = wb[:, i:i + m] ** 2 / torch.diag(ub)[i:i + m].unsqueeze(0) ** 2
                mask[:, c:c + m] = keep_highest(cost, 0, n, m, per_row=True)
            q[:, c] = wb[:, i] * mask[:, c]
            error = (wb[:, i] - q[:, c]) / ub[i, i]
            wb[:, i:] -= error.unsqueeze(1) @ ub[i, i:].unsqueeze(0)
            errors[:, i] = error
        if b1 < columns:
            w[:, b1:] -= errors @ u[b0:b1, b1:]
    return q.float(), mask


def reference(method, weight, h, sparsity, n, m):
    if method == "sparsegpt":
        return sparsegpt_reference(weight, h, sparsity, n, m)
    score = weight.abs().double()
    if method == "wanda":  # |w|·‖x‖, compared within each output row
        score = score * torch.diag(h).sqrt().unsqueeze(0)
    mask = keep_highest(score, sparsity, n, m, per_row=method == "wanda")
    return weight * mask, mask


def compiled(out):
    model = torch.jit.load(os.path.join(qt.WORK, out, "model.qforge.pt"))
    report = json.load(open(os.path.join(qt.WORK, out, "report.json")))
    return model, {layer["name"]: layer for layer in report["layers"]}, report


def output_error(weight, pruned, x):
    return (((x @ (weight - pruned).t().double()) ** 2).sum() / ((x @ weight.t().double()) ** 2).sum()).item()


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_pruning_matches_references(pattern):
    n, m = (2, 4) if pattern == "2:4" else (0, 0)
    model, inputs = layer_inputs()  # one step: wide_mlp has no repeated blocks
    errors = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        out = run(["compile", pruning_config(f"{{method: {method}, sparsity: 0.5, pattern: '{pattern}'}}", out=method)])
        contains(out, "pruning: 3 layers, 50.0% of their weights set to zero")
        pruned, layers, report = compiled(method)
        check(report["pruning"]["zeros"] * 2 == report["pruning"]["weights"], f"{method}: {report['pruning']}")
        for name in LAYERS:
            weight = getattr(model, name).weight.detach()
            x = inputs[name].double()
            expected, mask = reference(method, weight, hessian(inputs[name]), 0.5, n, m)
            got = getattr(pruned, name).weight.detach()
            check(torch.equal(got != 0, mask), f"{method} {pattern}: {name}: the mask differs from the reference")
            check(torch.allclose(got, expected, rtol=1e-5, atol=1e-6),
                  f"{method} {pattern}: {name}: weights differ from the reference by "
                  f"{(got - expected).abs().max().item()}")
            if m:  # every group of 4 inputs of every row keeps 2
                check(bool(((got.reshape(got.shape[0], -1, 4) != 0).sum(2) == 2).all()), f"{name}: not 2:4")
            info = layers[name]["pruning"]
            check(info["method"] == method and info["pattern"] == pattern and info["sparsity"] == 0.5, f"{info}")
            errors[method, name] = output_error(weight, got, x)
            if method != "magnitude":  # measured on the calibration inputs, as computed here
                check(abs(info["output_error"] - errors[method, name]) < 1e-6 * max(1, errors[method, name]),
                      f"{method} {name}: reported output error {info['output_error']}, here {errors[method, name]}")
    for name in LAYERS:  # SparseGPT's solve makes up for what it prunes
        check(errors["sparsegpt", name] < errors["wanda", name] and errors["sparsegpt", name] < errors["magnitude", name],
              f"{pattern} {name}: output errors {[(k, v) for k, v in errors.items() if k[1] == name]}")
    summary = open(os.path.join(qt.WORK, "sparsegpt", "summary.txt")).read()
    contains(summary, "pruning: 3 layers,", f"fc1: sparsegpt {pattern}, 50.0% zero, relative output error")


def llama_config(out, pruning, extra=""):
    from qforge_h5 import write_samples
    ids = torch.randint(0, 100, (36, 12), generator=torch.Generator().manual_seed(1))
    write_samples(os.path.join(qt.WORK, "ids.h5"), "tensor", ["ids"], {"t12": {"ids": ids.numpy()}})
    return write_config("llama.yaml", f"""
model: {{path: {ASSETS}/llama_decoder_scripted.pt}}
out_dir: {out}
calibration_inputs: {{files: [ids.h5], batch_size: 4}}
evaluation_inputs: {{files: [ids.h5], batch_size: 4}}
pruning_settings: {pruning}
""" + extra)


def test_pruning_identical_on_1_to_4_ranks():
    # SparseGPT 2:4 block by block, then GPTQ 4-bit holding the masks: the Hessians are
    # summed exactly and the solves broadcast, so any rank count gives the same bytes.
    gptq = ("deployment_settings: {target: libtorch}\nquantization_settings:\n"
            "  weights: {bits: 4, granularity: group, group_size: 16, algorithm: gptq}\n"
            "  activations: {enabled: false}\n")
    files = {}
    for ranks in (0, 2, 3, 4):
        out = run(["compile", llama_config(f"r{ranks}", "{method: sparsegpt, pattern: '2:4'}", gptq)],
                  ranks=ranks, timeout=300)
        contains(out, "pruning layers.2: block inputs kept", "gptq layers.2: block inputs kept")
        state = torch.jit.load(os.path.join(qt.WORK, f"r{ranks}", "model.qforge.pt")).state_dict()
        files[ranks] = [open(os.path.join(qt.WORK, f"r{ranks}", "quant_params.json"), "rb").read(), state]
    for ranks in (2, 3, 4):
        check(files[ranks][0] == files[0][0], f"quant_params.json on {ranks} ranks differs from 1 rank")
        for key, value in files[0][1].items():
            check(torch.equal(files[ranks][1][key], value), f"{key} on {ranks} ranks differs from 1 rank")
    params = json.loads(files[0][0])
    pruned = [layer["name"] for layer in params["layers"] if "sparsity" in layer.get("pruning", {})]
    check(len(pruned) == 22, f"pruned layers: {pruned}")  # 7 per block and the head; not the embedding
    embed = next(layer for layer in params["layers"] if layer["name"] == "embed")
    check("embedding table" in embed["pruning"]["dense"], f"embed: {embed.get('pruning')}")
    for name in pruned:  # GPTQ held the masks: every group of 4 still keeps at most 2
        w = files[0][1][name + ".weight"]
        check(bool(((w.reshape(w.shape[0], -1, 4) != 0).sum(2) <= 2).all()), f"{name}: GPTQ filled a pruned weight")
    # The evaluation measures the compiled model against the dense float model, not the pruned one.
    report = json.load(open(os.path.join(qt.WORK, "r4", "report.json")))
    import h5py
    with h5py.File(os.path.join(qt.WORK, "ids.h5")) as f:
        ids = torch.from_numpy(f["samples/t12/ids"][:])
    with torch.no_grad():
        dense = torch.jit.load(f"{ASSETS}/llama_decoder_scripted.pt")(ids).double()
        ours = torch.jit.load(os.path.join(qt.WORK, "r4", "model.qforge.pt"))(ids).double()
    sqnr = 10 * torch.log10((dense ** 2).sum() / ((dense - ours) ** 2).sum()).item()
    check(abs(report["evaluation"]["output_sqnr_db"] - sqnr) < 0.5,
          f"evaluation's SQNR {report['evaluation']['output_sqnr_db']} dB; against the dense model here {sqnr} dB")


def nonzero_per_group(w, m=4):
    return (w.reshape(w.shape[0], -1, m) != 0).sum(2)


@pytest.mark.parametrize("method", ["qa_lora", "lora"])
def test_masks_hold_through_fine_tuning_and_onnx(method):
    pytest.importorskip("onnx")
    import onnx
    from onnx import numpy_helper
    quantize = ("deployment_settings: {target: onnxruntime}\n"
                "quantization_settings: {weights: {bits: 8}, activations: {bits: 8}}\n")
    tune = (f"compile_options: {{fine_tune: {{enabled: true, method: {method}, steps: 6, batch_size: 8, "
            "warmup_steps: 0, learning_rate: 0.05}}\n")
    run(["compile", pruning_config("{method: wanda, pattern: '2:4'}", out="start", extra=quantize)])
    out = run(["compile", pruning_config("{method: wanda, pattern: '2:4'}", out="tuned", extra=quantize + tune)],
              timeout=300)
    start, _, _ = compiled("start")
    tuned, layers, _ = compiled("tuned")
    moved = 0
    for name in LAYERS:
        before, after = getattr(start, name).weight.detach(), getattr(tuned, name).weight.detach()
        check(layers[name].get("fine_tuned"), f"{name} was not fine-tuned")
        check(bool((nonzero_per_group(after) <= 2).all()), f"{method}: {name}: a pruned weight came back")
        moved += int((before != after).sum())
    check(moved > 0, f"{method}: fine-tuning changed no weight")
    onnx_path = os.path.join(qt.WORK, "tuned", "model.qforge.onnx")
    if not os.path.exists(onnx_path):
        pytest.skip("no onnxruntime to check the ONNX file against")
    contains(out, "ONNX file checked against model.qforge.pt on fresh inputs")
    graph = onnx.load(onnx_path).graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    int8 = [torch.from_numpy(a.astype("int64")) for a in weights.values() if a.dtype.name == "int8" and a.ndim == 2]
    check(len(int8) == 3, f"int8 weights in the ONNX file: {[a.shape for a in int8]}")
    for w in int8:  # the integers the runtime reads ([inputs, outputs] for MatMul): 2 of every 4 inputs zero
        check(bool((nonzero_per_group(w.t()) <= 2).all()), f"ONNX weight {tuple(w.shape)} is not 2:4")


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_sensitivity_threshold_prunes_sensitive_layers_less(method):
    run(["compile", pruning_config(f"{{method: {method}, sparsity: 0.5}}", out="plain")])
    _, layers, _ = compiled("plain")
    errors = {name: layers[name]["pruning"]["output_error"] for name in LAYERS}
    worst = max(errors, key=errors.get)
    ordered = sorted(errors.values())
    threshold = (ordered[1] + ordered[2]) / 2  # above two layers' error, below the worst one's
    out = run(["compile", pruning_config(f"{{method: {method}, sparsity: 0.5, sensitivity_threshold: {threshold}}}",
                                         out="allocated")])
    contains(out, f"pruning: layer '{worst}' errs")
    _, layers, report = compiled("allocated")
    for name in LAYERS:
        p = layers[name]["pruning"]
        check(p["output_error"] <= threshold * (1 + 1e-9), f"{name}: error {p['output_error']} above {threshold}")
    check(layers[worst]["pruning"]["sparsity"] < 0.5, f"{worst}: {layers[worst]['pruning']}")
    raised = [n for n in LAYERS if layers[n]["pruning"]["sparsity"] > 0.5]
    shortfall = [note for note in report["notes"] if "stay that the plan prunes" in note]
    check(raised or shortfall, f"nothing made up for the weights {worst} keeps: {report['notes']}")
    if not shortfall:  # the planned share held overall
        check(report["pruning"]["zeros"] >= 0.5 * report["pruning"]["weights"] - 64, f"{report['pruning']}")


def test_bad_pruning_settings_are_refused_by_key_and_layer():
    for pruning, message in [
            ("{sparsity: 1.0}", "pruning_settings.sparsity: expected a share from 0 to below 1"),
            ("{pattern: '4:2'}", "pruning_settings.pattern: expected unstructured or N:M with 1 <= N < M"),
            ("{pattern: 2-4}", "pruning_settings.pattern: expected unstructured or N:M"),
            ("{method: sparsegpt, pattern: '2:4', block_size: 6}", "pruning_settings.block_size: expected a multiple of M"),
            ("{method: prune_all}", "pruning_settings.method")]:
        out = run(["compile", pruning_config(pruning)], expect=3)
        contains(out, message)
        check("calibration:" not in out, f"refused only after calibrating:\n{out}")
    out = run(["compile", write_config("nocal.yaml", f"model: {{path: {MODEL}}}\npruning_settings: {{method: wanda}}\n")],
              expect=3)
    contains(out, "pruning_settings.method: expected calibration_inputs")
    out = run(["compile", write_config("noprune.yaml", f"""
model: {{path: {MODEL}}}
layer_quantization_settings: {{fc1: {{pruning: {{sparsity: 0.3}}}}}}
""")], expect=3)
    contains(out, "layer_quantization_settings[fc1].pruning: expected pruning_settings")
    # An override's pattern SparseGPT's blocks cannot hold, named by its key before any work.
    out = run(["compile", pruning_config("{method: sparsegpt}", extra="layer_quantization_settings: "
                                         "{fc2: {pruning: {pattern: '3:7'}}}\n")], expect=3)
    contains(out, "layer_quantization_settings[fc2].pruning.pattern: 3:7 with sparsegpt needs")
    check("calibration:" not in out, f"refused only after calibrating:\n{out}")


def resnet_config(extra):
    return write_config("resnet.yaml", f"""
model: {{path: {ASSETS}/resnet18_traced.pt}}
calibration_inputs: {{files: [{ASSETS}/images.h5], batch_size: 8, groups: [s32]}}
pruning_settings: {{method: magnitude, pattern: '2:4'}}
""" + extra)


def test_layers_that_cannot_take_a_pattern_stay_dense_or_are_refused_when_named():
    # conv1 reads 3 input channels: 2:4 cannot apply. Globally it stays dense with the reason;
    # named in the overrides it is refused before calibration.
    plan = run(["compile", resnet_config(""), "--dry-run", "--set", "out_dir=plan"])
    contains(plan, "(dense: 3 input channels per group are not a multiple of M=4 of pattern 2:4)",
             "+ prune magnitude 2:4")
    out = run(["compile", resnet_config("layer_quantization_settings: {conv1: {pruning: {enabled: true}}}\n")],
              expect=3)
    contains(out, "layer_quantization_settings[conv1].pruning: layer 'conv1' cannot be pruned: 3 input channels")
    check("calibration:" not in out, f"refused only after calibrating:\n{out}")
    # A convolution's 2:4 groups run along its input channels at each kernel position (as TensorRT reads them).
    run(["compile", resnet_config("layer_quantization_settings: {fc: {pruning: {enabled: false}}}\n")], timeout=300)
    model = torch.jit.load(os.path.join(qt.WORK, "qforge_out", "model.qforge.pt"))
    w = getattr(model.layer1, "0").conv1.weight.detach()
    check(bool(((w.permute(0, 2, 3, 1) != 0).reshape(-1, w.shape[1] // 4, 4).sum(2) == 2).all()),
          "layer1.0.conv1 is not 2:4 along its input channels")
    check(bool((model.conv1.weight != 0).all()) and bool((model.fc.weight != 0).all()), "conv1 or fc was pruned")


def test_a_tied_output_layer_is_kept_dense_or_refused_when_named():
    cfg = f"""
model: {{path: {ASSETS}/hf_llama_traced.pt}}
calibration_inputs: {{files: [{ASSETS}/tokens.h5], batch_size: 4, groups: [len12]}}
pruning_settings: {{method: magnitude, sparsity: 0.5}}
"""
    plan = run(["compile", write_config("tied.yaml", cfg), "--dry-run", "--set", "out_dir=plan"])
    contains(plan, "pruning it would prune both uses")
    tied = [line.split()[0] for line in plan.splitlines() if "pruning it would prune both uses" in line]
    out = run(["compile", write_config("tied_named.yaml", cfg + f"layer_quantization_settings: "
                                       f"{{'{tied[-1]}': {{pruning: {{sparsity: 0.3}}}}}}\n")], expect=3)
    contains(out, f"layer '{tied[-1]}' cannot be pruned: its weight is tied to")


# ---- structured pruning: channel groups removed from the model ----

def structured_config(model, out, pruning="{method: structured, sparsity: 0.5}", extra=""):
    return write_config(f"{out}.yaml", f"""
model: {{path: {ASSETS}/{model}.pt}}
out_dir: {out}
calibration_inputs: {{files: [{ASSETS}/images.h5], batch_size: 8, groups: [s32]}}
pruning_settings: {pruning}
""" + extra)


def batch_norm_of(conv):
    """The batch norm after a torchvision convolution: conv1 -> bn1, features.0.0 -> features.0.1."""
    head, _, last = conv.rpartition(".")
    name = str(int(last) + 1) if last.isdigit() else last.replace("conv", "bn")
    return f"{head}.{name}" if head else name


def removed_channels(group):
    return sorted(set(range(group["channels"])) - set(group["kept_channels"]))


def zero_removed_channels(model, groups):
    """The dense model with every removed channel written as zero: each writer's batch norm
    (and each depthwise reader's) outputs 0 there, which ReLU keeps 0 for the layers reading it."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for g in groups:
            if "kept_channels" not in g:
                continue
            removed = removed_channels(g)
            depthwise = [r for r in g["readers"] if modules[r].weight.shape[1] == 1 and modules[r].weight.shape[0] > 1]
            for conv in g["producers"] + depthwise:
                bn = modules[batch_norm_of(conv)]
                bn.weight[removed] = 0
                bn.bias[removed] = 0
    return model


def group_with(groups, *producers):
    found = [g for g in groups if set(producers) <= set(g["producers"])]
    check(len(found) == 1, f"no one group writes {producers}: {[g['producers'] for g in groups]}")
    return found[0]


@pytest.mark.parametrize("model", ["resnet18_traced", "mobilenet_v2_traced"])
def test_structured_pruning_removes_coupled_channels(model):
    # Half the channels of every group leave every layer writing or reading them: residual
    # adds couple their inputs, a depthwise convolution passes its group through, the
    # flatten feeds the classifier; the smaller model computes what the dense one does
    # with those channels at zero.
    run(["compile", structured_config(model, "out")], timeout=300)
    pruned, _, report = compiled("out")
    s = report["structured_pruning"]
    check(s["importance"] == "l2" and s["parameters"] < 0.5 * s["dense_parameters"], f"{s['parameters']} parameters")
    groups = s["groups"]
    if model == "resnet18_traced":
        coupled = [("conv1", "layer1.0.conv2", "layer1.1.conv2"),
                   ("layer2.0.downsample.0", "layer2.0.conv2", "layer2.1.conv2")]
        check("fc" in group_with(groups, "layer4.0.downsample.0")["readers"], "the classifier reads layer4")
    else:
        coupled = [("features.2.conv.2", "features.3.conv.2"), ("features.0.0",)]
        check("features.1.conv.0.0" in group_with(groups, "features.0.0")["readers"], "the depthwise conv")
    for producers in coupled:
        g = group_with(groups, *producers)
        check(0 < g["kept"] < g["channels"] and len(g["kept_channels"]) == g["kept"], f"{g}")
    head = [g for g in groups if g["producers"] == ["classifier.1" if "mobilenet" in model else "fc"]]
    check(len(head) == 1 and "output of the method" in head[0]["whole"], f"the classifier's group: {head}")
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        dense = zero_removed_channels(torch.jit.load(f"{ASSETS}/{model}.pt"), groups)(x)
        ours = pruned(x)
    check(ours.shape == (4, 10), f"output {tuple(ours.shape)}")
    error = ((ours - dense).abs().max() / dense.abs().max()).item()
    check(error < 1e-4, f"the pruned model differs from the dense one with the channels at zero by {error}")
    summary = open(os.path.join(qt.WORK, "out", "summary.txt")).read()
    contains(summary, "structured pruning (l2):", "channels: ")


def mlp_config(out, importance):
    from qforge_h5 import write_samples
    ids = torch.randint(0, 100, (24, 12), generator=torch.Generator().manual_seed(1))
    write_samples(os.path.join(qt.WORK, "ids.h5"), "tensor", ["ids"], {"t12": {"ids": ids.numpy()}})
    return write_config(f"{out}.yaml", f"""
model: {{path: {ASSETS}/llama_decoder_scripted.pt}}
out_dir: {out}
calibration_inputs: {{files: [ids.h5], batch_size: 4}}
pruning_settings: {{method: structured, sparsity: 0.5, importance: {importance}}}
""")


@pytest.mark.parametrize("importance", ["activation", "taylor"])
def test_structured_pruning_of_a_decoder_is_identical_on_1_and_3_ranks(importance):
    # SwiGLU: gate and up write one group of neurons that down reads; attention projections
    # (split into heads) and the residual stream (normed) stay whole with their reasons.
    # Activation and Taylor importance sum each neuron's scores exactly over the ranks' shards.
    states = {}
    for ranks in (0, 3):
        run(["compile", mlp_config(f"r{ranks}", importance)], ranks=ranks, timeout=300)
        states[ranks] = torch.jit.load(os.path.join(qt.WORK, f"r{ranks}", "model.qforge.pt")).state_dict()
    for key, value in states[0].items():
        check(torch.equal(states[3][key], value), f"{key} on 3 ranks differs from 1 rank")
    _, _, report = compiled("r0")
    groups = report["structured_pruning"]["groups"]
    for block in range(3):
        g = group_with(groups, f"layers.{block}.mlp.gate", f"layers.{block}.mlp.up")
        check(g["readers"] == [f"layers.{block}.mlp.down"] and g["kept"] == 32, f"{g}")
        q = group_with(groups, f"layers.{block}.attn.q")
        check("whole" in q, f"the attention heads were pruned: {q}")
    check(states[0]["layers.0.mlp.down.weight"].shape == (32, 32), "down keeps 32 inputs")
    # The same neurons at zero in the dense model give the same logits.
    dense = torch.jit.load(f"{ASSETS}/llama_decoder_scripted.pt")
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        for block in range(3):
            g = group_with(groups, f"layers.{block}.mlp.gate")
            removed = removed_channels(g)
            getattr(dense.layers, str(block)).mlp.gate.weight[removed] = 0
        expected = dense(ids)
        got = torch.jit.load(os.path.join(qt.WORK, "r0", "model.qforge.pt"))(ids)
    check(torch.allclose(got, expected, atol=1e-5, rtol=1e-4), f"{(got - expected).abs().max().item()}")


def test_structured_pruning_to_int8_onnx_and_bad_settings():
    pytest.importorskip("onnx")
    quantize = ("deployment_settings: {target: onnxruntime}\nquantization_settings: {}\n"
                f"evaluation_inputs: {{files: [{ASSETS}/images.h5], batch_size: 8, groups: [s32]}}\n")
    out = run(["compile", structured_config("resnet18_traced", "int8", extra=quantize)], timeout=400)
    onnx_path = os.path.join(qt.WORK, "int8", "model.qforge.onnx")
    if os.path.exists(onnx_path):
        contains(out, "ONNX file checked against model.qforge.pt on fresh inputs")
        import onnx
        from onnx import numpy_helper
        shapes = {tuple(numpy_helper.to_array(t).shape) for t in onnx.load(onnx_path).graph.initializer}
        # conv1 (64 channels) and layer4 (512) as pruned: the ONNX file is the smaller dense graph
        check({(32, 3, 7, 7), (256, 256, 3, 3)} <= shapes and not {(64, 3, 7, 7), (512, 512, 3, 3)} & shapes,
              f"the ONNX file's weights: {sorted(s for s in shapes if len(s) == 4)}")
    # A layer named on purpose whose channels the graph keeps (the classifier writes the output).
    out = run(["compile", structured_config("resnet18_traced", "bad",
                                            extra="layer_quantization_settings: {fc: {pruning: {sparsity: 0.3}}}\n")],
              expect=3)
    contains(out, "layer_quantization_settings[fc].pruning: layer 'fc' cannot lose channels: its channels are an "
                  "output of the method")
    for pruning, key in [("{method: structured, pattern: '2:4'}", "pruning_settings.pattern"),
                         ("{method: structured, importance: hessian}", "pruning_settings.importance")]:
        out = run(["compile", structured_config("resnet18_traced", "bad", pruning=pruning)], expect=3)
        contains(out, key)
    plan = run(["compile", structured_config("resnet18_traced", "plan"), "--dry-run"])
    contains(plan, "structured pruning (l2):", "whole (10): fc: its channels are an output of the method")


def compile_on_images(model, pruning, labels=None, ranks=0):
    """Compiles a scripted model made here on 16 random 3x8x8 images (with `labels` where given);
    the pruned model and its groups."""
    from qforge_h5 import write_samples
    model.save(os.path.join(qt.WORK, "model.pt"))
    write_samples(os.path.join(qt.WORK, "images.h5"), "tensor", ["x"], {"s8": {"x": random_images().numpy()}},
                  labels=None if labels is None else {"s8": labels.numpy()})
    run(["compile", write_config("model.yaml", f"""
model: {{path: model.pt}}
out_dir: out
calibration_inputs: {{files: [images.h5], batch_size: 4}}
pruning_settings: {pruning}
""")], ranks=ranks)
    pruned, _, report = compiled("out")
    return pruned, report["structured_pruning"]["groups"]


def random_images():
    return torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(8))


class Residual(torch.nn.Module):
    """A residual add (conv1's channels read by conv2 and conv3) and a spatial mean into a Linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = torch.nn.Conv2d(16, 16, 1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x, gates: Optional[List[torch.Tensor]] = None):
        a = torch.relu(self.conv1(x))
        b = torch.relu(self.conv2(gated(a, gates, 0))) + a
        c = torch.relu(self.conv3(gated(b, gates, 1)))
        return self.fc(gated(c.mean((2, 3)), gates, 2))


def gated(t, gates: Optional[List[torch.Tensor]], i: int):
    """The reference's gate on a reader's input channels (ones, to differentiate); none in the compile."""
    if gates is None:
        return t
    g = gates[i]
    return t * (g.view(g.size(0), g.size(1), 1, 1) if t.dim() == 4 else g)


def taylor_reference(model, images, labels):
    """Molchanov et al.'s score per channel: the sum over rows of the squared sum over a group's
    readers of dLoss/dgate, the gates (ones) multiplying each reader's input channels."""
    gates = [torch.ones(len(images), 16, requires_grad=True) for _ in range(3)]
    logits = model(images, gates)
    target = labels if labels is not None else logits.detach().argmax(-1)
    torch.nn.functional.cross_entropy(logits, target, reduction="sum").backward()
    return {"conv1": (gates[0].grad + gates[1].grad).pow(2).sum(0), "conv3": gates[2].grad.pow(2).sum(0)}


@pytest.mark.parametrize("labels", [False, True])
def test_structured_taylor_importance_matches_a_reference(labels):
    # Without labels the loss is the cross-entropy of the model's own top predictions; 2 ranks
    # with labels (every rank's shard summed exactly).
    torch.manual_seed(11)
    model = Residual().eval()
    y = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(3)) if labels else None
    expected = taylor_reference(model, random_images(), y)
    traced = torch.jit.trace(model, random_images()[:2])  # without the gates
    _, groups = compile_on_images(traced, "{method: structured, sparsity: 0.5, importance: taylor}",
                                  labels=y, ranks=2 if labels else 0)
    for writer, scores in expected.items():
        g = group_with(groups, writer)
        kept = sorted(scores.topk(8).indices.tolist())
        check(g.get("kept_channels") == kept, f"{writer}'s group: {g}; the reference keeps {kept}")


class FeatureMap(Residual):
    """Residual's layers, the output a feature map (no logits to differentiate a cross-entropy of)."""

    def forward(self, x):
        a = torch.relu(self.conv1(x))
        return self.conv3(torch.relu(self.conv2(a)) + a)


def test_structured_taylor_importance_refuses_what_it_cannot_differentiate():
    from qforge_h5 import write_samples
    write_samples(os.path.join(qt.WORK, "images.h5"), "tensor", ["x"], {"s8": {"x": random_images().numpy()}})
    torch.manual_seed(12)
    buffers = Residual().eval()  # weights held as buffers: no gradient reaches the layers' inputs
    for m in (buffers.conv1, buffers.conv2, buffers.conv3, buffers.fc):
        weight, bias = m.weight.data, m.bias.data
        del m.weight, m.bias
        m.register_buffer("weight", weight)
        m.register_buffer("bias", bias)
    for model, code, message in [(FeatureMap().eval(), 3, "its output is not [batch, classes]"),
                                 (buffers, 5, "no gradient reaches the layers' inputs")]:
        torch.jit.trace(model, random_images()[:2]).save(os.path.join(qt.WORK, "model.pt"))
        out = run(["compile", write_config("model.yaml", """
model: {path: model.pt}
out_dir: out
calibration_inputs: {files: [images.h5], batch_size: 4}
pruning_settings: {method: structured, sparsity: 0.5, importance: taylor}
""")], expect=code)
        contains(out, "importance", message)


class TwoBranches(torch.nn.Module):
    """Two branches summed into the output, the second scaled down: its channels matter little."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 64, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(3, 64, 3, padding=1)
        self.fc1 = torch.nn.Linear(64, 10)
        self.fc2 = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.fc1(torch.relu(self.conv1(x)).mean((2, 3))) + 0.01 * self.fc2(torch.relu(self.conv2(x)).mean((2, 3)))


def test_structured_sensitivity_threshold_moves_channels_between_groups():
    # conv1's group errs above the threshold at 50% and is pruned less; conv2's, which matters
    # little, loses more channels for it. The error qforge measured for conv1's group at 50% equals
    # this reference: its 32 lowest-l2 channels zeroed, on the 16 calibration rows; 2 ranks share
    # the measurements.
    torch.manual_seed(13)
    model = TwoBranches().eval()
    with torch.no_grad():
        def l2(w, axis):  # each layer's channel norms divided by their mean, as the l2 importance
            n = w.pow(2).sum([d for d in range(w.dim()) if d != axis]).sqrt()
            return n / n.mean()
        scores = l2(model.conv1.weight, 0) + l2(model.fc1.weight, 1)
        removed = sorted(set(range(64)) - set(scores.topk(32).indices.tolist()))
        dense = model(random_images())
        zeroed = TwoBranches().eval()
        zeroed.load_state_dict(model.state_dict())
        zeroed.fc1.weight[:, removed] = 0
        expected = ((zeroed(random_images()) - dense).pow(2).sum() / dense.pow(2).sum()).sqrt().item()
    check(expected > 0.05, f"the reference error {expected} is not above the threshold")
    _, groups = compile_on_images(torch.jit.trace(model, random_images()[:2]),
                                  "{method: structured, sparsity: 0.5, sensitivity_threshold: 0.05}", ranks=2)
    one, two = group_with(groups, "conv1"), group_with(groups, "conv2")
    check(one["kept"] > 32 and two["kept"] < 32, f"conv1 keeps {one['kept']}, conv2 {two['kept']} of 64")
    _, _, report = compiled("out")
    notes = " ".join(report["notes"])
    contains(notes, "pruning: channel group 'conv1' errs", "pruning: channel group 'conv2' pruned to")
    measured = float(notes.split("channel group 'conv1' errs ")[1].split()[0])
    check(abs(measured - expected) < 1e-3, f"conv1's group errs {measured} at 50%, the reference {expected}")


class Branches(torch.nn.Module):
    """Two convolutions concatenated along the channels, a squeeze-and-excitation gate
    (an elementwise product coupling two groups) and x.view(batch, features) into a Linear."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.b = torch.nn.Conv2d(3, 8, 1)
        self.c = torch.nn.Conv2d(24, 16, 3, padding=1)
        self.se = torch.nn.Conv2d(16, 16, 1)
        self.fc = torch.nn.Linear(16 * 8 * 8, 10)

    def forward(self, x):
        y = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)
        z = torch.relu(self.c(y))
        z = z * torch.sigmoid(self.se(z.mean((2, 3), keepdim=True)))
        return self.fc(z.view(z.size(0), 16 * 8 * 8))


def test_structured_pruning_follows_concatenation_gates_and_views():
    torch.manual_seed(7)
    model = torch.jit.script(Branches().eval())
    pruned, groups = compile_on_images(model, "{method: structured, sparsity: 0.5, importance: l1}")
    a, b, c = group_with(groups, "a"), group_with(groups, "b"), group_with(groups, "c", "se")
    check(a["readers"] == ["c"] and b["readers"] == ["c"] and c["readers"] == ["se", "fc"], f"{groups}")
    check((a["kept"], b["kept"], c["kept"]) == (8, 4, 8), f"kept {a['kept']}, {b['kept']}, {c['kept']}")
    check(tuple(pruned.c.weight.shape) == (8, 12, 3, 3) and tuple(pruned.fc.weight.shape) == (10, 8 * 64),
          f"c {tuple(pruned.c.weight.shape)}, fc {tuple(pruned.fc.weight.shape)}")
    with torch.no_grad():  # the dense model with the removed channels written as zero
        for g in (a, b, c):
            removed = removed_channels(g)
            for name in g["producers"]:
                getattr(model, name).weight[removed] = 0
                getattr(model, name).bias[removed] = 0
        x = torch.randn(2, 3, 8, 8)
        check(torch.allclose(pruned(x), model(x), atol=1e-5), f"{(pruned(x) - model(x)).abs().max().item()}")


class NormsAfterAdds(torch.nn.Module):
    """Batch norms no convolution absorbs: one after a residual add, one after a Linear."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.b = torch.nn.Conv2d(3, 16, 1)
        self.bn = torch.nn.BatchNorm2d(16)
        self.c = torch.nn.Conv2d(16, 8, 3, padding=1)
        self.fc1 = torch.nn.Linear(8 * 8 * 8, 32)
        self.bn1 = torch.nn.BatchNorm1d(32)
        self.fc2 = torch.nn.Linear(32, 10)

    def forward(self, x):
        y = torch.relu(self.bn(self.a(x) + self.b(x)))
        z = torch.flatten(torch.relu(self.c(y)), 1)
        return self.fc2(torch.relu(self.bn1(self.fc1(z))))


def test_structured_pruning_takes_batch_norms_along():
    torch.manual_seed(9)
    model = NormsAfterAdds().eval()
    with torch.no_grad():
        for bn in (model.bn, model.bn1):
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 2), bn.bias.uniform_(-1, 1)
    model = torch.jit.script(model)
    pruned, groups = compile_on_images(model, "{method: structured, sparsity: 0.5}")
    ab, fc1 = group_with(groups, "a", "b"), group_with(groups, "fc1")
    check("bn" in ab["readers"] and "bn1" in fc1["readers"], f"{groups}")
    check(tuple(pruned.bn.running_mean.shape) == (8,) and tuple(pruned.bn1.weight.shape) == (16,),
          f"bn {tuple(pruned.bn.running_mean.shape)}, bn1 {tuple(pruned.bn1.weight.shape)}")
    with torch.no_grad():  # the dense model with every removed channel at zero after its norm
        for g in groups:
            if "kept_channels" not in g:
                continue
            removed = removed_channels(g)
            for name in g["producers"] + [r for r in g["readers"] if r.startswith("bn")]:
                getattr(model, name).weight[removed] = 0
                getattr(model, name).bias[removed] = 0
        x = torch.randn(2, 3, 8, 8)
        check(torch.allclose(pruned(x), model(x), atol=1e-5), f"{(pruned(x) - model(x)).abs().max().item()}")
