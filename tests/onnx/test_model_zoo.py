"""A model zoo exported as users bring it: torchvision classifiers of every family, segmenters, and
small transformer encoders and decoders (tied and untied heads, grouped-query attention, rotary
positions; traced and scripted; a loop and keyword arguments), at small sizes with random weights.
Each compiles INT8 for onnxruntime from data in two shapes; the compile itself checks its ONNX
file against model.qforge.pt on fresh inputs in every shape and at a size the data lacks (and
fails, naming the node where they part, below 20 dB), and `qforge export --float` checks the float
file against the float model. Each test_* function is a ctest case (zoo_<family>); the families
marked slow run where 8 or more cores are (the GPU image), or with QFORGE_ZOO=all. As a script it
writes the table docs/deployment.md quotes: python3 tests/onnx/test_model_zoo.py TABLE.md"""
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "models"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "src", "python"))
import hf_like  # noqa: E402
import onnx_check  # noqa: E402
from qforge.data import write_samples  # noqa: E402

QFORGE = os.environ.get("QFORGE_BIN") or os.path.join(HERE, "..", "..", "build", "qforge")
SLOW = (os.cpu_count() or 1) >= 8 or os.environ.get("QFORGE_ZOO") == "all"


def tv(name, **kwargs):
    def build():
        import torchvision.models.segmentation  # noqa: F401  (segmenters live here)
        from torchvision import models
        return getattr(models, name, None) or getattr(models.segmentation, name)
    return lambda: build()(**kwargs)


def vit():
    from torchvision.models.vision_transformer import VisionTransformer
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                              num_classes=10)
    # torchvision starts the head at zero: every output would be 0 and every comparison "inf dB"
    torch.nn.init.normal_(model.heads.head.weight, std=0.1)
    return model


def swin():
    from torchvision.models.swin_transformer import SwinTransformer
    return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4],
                           num_classes=10)


class Encoder(torch.nn.Module):
    """Token embedding, two nn.TransformerEncoderLayer, mean pooling, a classifier."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(hf_like.VOCAB, 32)
        self.layers = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(32, 4, 64, 0.0, batch_first=True), 2)
        self.head = torch.nn.Linear(32, 5)

    def forward(self, ids):
        return self.head(self.layers(self.embed(ids)).mean(1))


class LoopDecoder(torch.nn.Module):
    """A scripted decoder that applies one block `repeats` times (a keyword argument) and ties its head."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(hf_like.VOCAB, 32)
        self.block = torch.nn.Linear(32, 32)
        self.norm = torch.nn.LayerNorm(32)
        self.head = torch.nn.Linear(32, hf_like.VOCAB, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids, repeats: int = 1):
        x = self.embed(ids)
        for _ in range(repeats):
            x = x + torch.relu(self.block(self.norm(x)))
        return self.head(x)


# family -> [(name, model factory, capture, input kind, sizes, slow)]; sizes: images (H, W) or sequence lengths
IMAGE, IDS = "image", "ids"
ZOO = {
    "resnets": [("resnet18", tv("resnet18", num_classes=10), "trace", IMAGE, [32, 40], False),
                ("resnext50_32x4d", tv("resnext50_32x4d", num_classes=10), "trace", IMAGE, [32, 40], True),
                ("wide_resnet50_2", tv("wide_resnet50_2", num_classes=10), "trace", IMAGE, [32, 40], True)],
    "mobile": [("mobilenet_v2", tv("mobilenet_v2", num_classes=10), "script", IMAGE, [32, 40], False),
               ("mobilenet_v3_small", tv("mobilenet_v3_small", num_classes=10), "trace", IMAGE, [32, 40], False),
               ("efficientnet_b0", tv("efficientnet_b0", num_classes=10), "trace", IMAGE, [32, 40], False),
               ("mnasnet0_5", tv("mnasnet0_5", num_classes=10), "trace", IMAGE, [32, 40], False),
               ("shufflenet_v2_x0_5", tv("shufflenet_v2_x0_5", num_classes=10), "trace", IMAGE, [32, 40], False),
               ("squeezenet1_1", tv("squeezenet1_1", num_classes=10), "trace", IMAGE, [32, 40], False)],
    "nets": [("regnet_y_400mf", tv("regnet_y_400mf", num_classes=10), "trace", IMAGE, [32, 40], False),
             ("densenet121", tv("densenet121", num_classes=10), "trace", IMAGE, [32, 40], True),
             ("googlenet", tv("googlenet", num_classes=10, aux_logits=False, init_weights=False), "trace", IMAGE,
              [32, 40], True),
             ("inception_v3", tv("inception_v3", num_classes=10, aux_logits=False, init_weights=False), "trace",
              IMAGE, [80, 96], True),
             ("convnext_tiny", tv("convnext_tiny", num_classes=10), "trace", IMAGE, [32, 40], True)],
    "transformers": [("vit", vit, "trace", IMAGE, [32, 32], False),
                     ("swin", swin, "trace", IMAGE, [32, 32], False),
                     ("encoder", Encoder, "trace", IDS, [8, 12], False),
                     ("llama_untied_gqa_rotary", lambda: hf_like.Logits(hf_like.Llama()), "trace", IDS, [6, 12], False),
                     ("llama_tied", lambda: hf_like.Logits(hf_like.Llama(tied=True)), "trace", IDS, [6, 12], False),
                     ("gpt2_conv1d", hf_like.Gpt2, "trace", IDS, [6, 12], False),
                     ("decoder_loop_kwargs", LoopDecoder, "script", IDS, [6, 12], False)],
    "segmentation": [("fcn_resnet50", tv("fcn_resnet50", num_classes=4, weights_backbone=None, aux_loss=False),
                      "trace", IMAGE, [64, 72], True),
                     ("lraspp_mobilenet_v3", tv("lraspp_mobilenet_v3_large", num_classes=4, weights_backbone=None),
                      "trace", IMAGE, [64, 72], False)],
}


def example(kind, size, rows, seed):
    rng = np.random.default_rng(seed)
    if kind == IMAGE:
        return rng.standard_normal((rows, 3, size, size)).astype(np.float32)
    return rng.integers(1, hf_like.VOCAB, (rows, size)).astype(np.int64)


class Dense(torch.nn.Module):
    """A segmenter's dict output as one tensor."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


def run_model(work, name, factory, capture, kind, sizes):
    """One model: (row of the table, failure or None)."""
    torch.manual_seed(0)
    model = factory().eval()
    if name.startswith(("fcn", "lraspp")):
        model = Dense(model)
    path = os.path.join(work, name + ".pt")
    with torch.no_grad():
        if capture == "script":
            torch.jit.script(model).save(path)
        else:
            torch.jit.trace(model, torch.from_numpy(example(kind, sizes[0], 2, 9)), check_trace=False).save(path)
    data = os.path.join(work, name + ".h5")
    groups = {f"s{size:03d}": {"x": example(kind, size, 8, i)} for i, size in enumerate(sorted(set(sizes)))}
    write_samples(data, "tensor", ["x"], groups)
    out = os.path.join(work, name)
    # Swin builds its attention masks in place from sizes: with fixed sizes they fold (docs/deployment.md)
    extra = {"decoder_loop_kwargs": "forward: {kwargs: {repeats: 2}}\n", "swin": "dynamic: false\n"}.get(name, "")
    cfg = os.path.join(work, name + ".yaml")
    with open(cfg, "w") as f:
        f.write(f"model: {{path: {path}}}\nout_dir: {out}\n"
                f"calibration_inputs: {{files: [{data}], batch_size: 4}}\n"
                f"evaluation_inputs: {{files: [{data}], batch_size: 4}}\n"
                f"deployment_settings: {{target: onnxruntime}}\nquantization_settings: {{}}\n" + extra)
    row = {"model": name, "capture": capture + (", dynamic: false" if "dynamic" in extra else "")}
    p = subprocess.run([QFORGE, "compile", cfg], capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        return row, f"{name}: compile exit {p.returncode}: " + " ".join(
            l for l in p.stderr.splitlines() if "error" in l)[-600:]
    report = json.load(open(os.path.join(out, "report.json")))
    onnx = report["onnx"]
    if "fresh_inputs" not in onnx:
        return row, f"{name}: the compile did not check its file on fresh inputs: {onnx.get('not_verified')}"
    row["quantized_db"] = onnx["fresh_inputs"]["worst_output_sqnr_db"]
    row["agreement"] = (onnx.get("evaluation") or {}).get("top1_agreement")
    row["vs_float_db"] = report["evaluation"]["output_sqnr_db"]
    p = subprocess.run([QFORGE, "export", out, "--float", "-o", os.path.join(work, name + ".float.onnx")],
                       capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        return row, f"{name}: float export exit {p.returncode}: {p.stderr.strip()[-600:]}"
    figures = [float(x) if x != "inf" else float("inf") for x in re.findall(r"(-?[0-9.]+|inf) dB", p.stdout)]
    row["float_db"] = min(figures) if figures else None
    return row, None


def check_family(family):
    try:
        onnx_check.require_onnxruntime()
    except onnx_check.Skip as e:
        pytest.skip(str(e))
    failures, ran = [], 0
    with tempfile.TemporaryDirectory(prefix=f"qforge-zoo-{family}-") as work:
        for name, factory, capture, kind, sizes, slow in ZOO[family]:
            if slow and not SLOW:
                print(f"{name}: left to machines with 8 or more cores (QFORGE_ZOO=all runs it here)")
                continue
            row, failure = run_model(work, name, factory, capture, kind, sizes)
            ran += 1
            print(row if failure is None else failure)
            if failure:
                failures.append(failure)
    assert not failures, "\n".join(failures)
    assert ran, "no model of the family ran"


def test_resnets():
    check_family("resnets")


def test_mobile():
    check_family("mobile")


def test_nets():
    check_family("nets")


def test_transformers():
    check_family("transformers")


def test_segmentation():
    check_family("segmentation")


def main(table_path):
    rows = []
    with tempfile.TemporaryDirectory(prefix="qforge-zoo-") as work:
        for family, models in ZOO.items():
            for name, factory, capture, kind, sizes, _ in models:
                row, failure = run_model(work, name, factory, capture, kind, sizes)
                row["family"], row["failure"] = family, failure
                print(row, flush=True)
                rows.append(row)

    def db(v):
        return "-" if v is None else ("inf" if v == float("inf") else f"{v:.1f}")
    lines = ["| family | model | capture | float ONNX vs float model dB | INT8 ONNX vs model.qforge.pt dB | "
             "top-1 agreement | INT8 vs float dB | note |", "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        agreement = "-" if r.get("agreement") is None else f"{r['agreement']:.3f}"
        lines.append(f"| {r['family']} | {r['model']} | {r['capture']} | {db(r.get('float_db'))} | "
                     f"{db(r.get('quantized_db'))} | {agreement} | {db(r.get('vs_float_db'))} | {r['failure'] or ''} |")
    with open(table_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return 1 if any(r["failure"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
