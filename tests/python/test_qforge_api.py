"""qforge.compile, the Python front door (src/python/qforge): clika_compile's arguments each change
the outcome; samples as a list, a generator and a DataLoader give byte-identical compiles; tensor,
tuple, dict and args+kwargs samples; dynamic axes from two tracing inputs; forward_fn and a bound
method; 1, 2 and 3 ranks byte-identical; the engine's exit codes as exceptions with its message;
bad input named; calibration data streamed; the returned module computes as model.qforge.pt.
Each test_* function is a ctest case (python_<case>)."""
import json
import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import qforge_testing as qt  # noqa: E402
from qforge_testing import check  # noqa: E402

import qforge  # noqa: E402


@pytest.fixture(autouse=True)
def work():
    with qt.work_dir("qforge-python-") as path:
        old = os.getcwd()
        os.chdir(path)
        yield path
        os.chdir(old)


class Net(torch.nn.Module):
    """A small CNN: conv, batch norm, ReLU, pooling, two linear layers."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc1 = torch.nn.Linear(8, 16)
        self.fc2 = torch.nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x))).mean((2, 3))
        return self.fc2(torch.relu(self.fc1(x)))

    def infer(self, x, scale: float = 2.0):
        return self.forward(x) * scale


class TwoInputs(torch.nn.Module):
    """ids and a mask, as a language model takes them: positionally or as keywords."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16)
        self.fc = torch.nn.Linear(16, 5)

    def forward(self, input_ids, attention_mask=None, scale: float = 1.0):
        x = self.embed(input_ids) * attention_mask.unsqueeze(-1).float()
        return self.fc(x.mean(1)) * scale


class DictInput(torch.nn.Module):
    """One argument, a dict of tensors."""

    def __init__(self):
        super().__init__()
        self.inner = TwoInputs()

    def forward(self, batch):
        return self.inner(batch["input_ids"], batch["attention_mask"])


def images(n, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, size, size, generator=g) for _ in range(n)]


def text(n, length=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, 50, (4, length), generator=g)
        mask = torch.ones(4, length, dtype=torch.long)
        mask[:, -2:] = 0
        out.append((ids, mask))
    return out


def net():
    torch.manual_seed(0)
    return Net().eval()


def ort():
    return qforge.OnnxRuntimeSettings()


def quant_params(out):
    with open(os.path.join(out, "quant_params.json"), "rb") as f:
        return f.read()


def sqnr(ref, x):
    ref, x = ref.double(), x.double()
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - x).pow(2).sum().clamp_min(1e-30)))


def test_list_generator_and_dataloader_compile_byte_identical(work):
    data = images(4)
    as_list = qforge.compile(net(), calibration_inputs=data, deployment_settings=ort(),
                             quantization_settings={}, out_dir="list", progress=False)
    qforge.compile(net(), calibration_inputs=(x for x in data), deployment_settings=ort(),
                   quantization_settings={}, out_dir="generator", progress=False)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.cat(data)), batch_size=4)
    qforge.compile(net(), calibration_inputs=loader, deployment_settings=ort(), quantization_settings={},
                   out_dir="loader", progress=False)
    check(quant_params("list") == quant_params("generator") == quant_params("loader"),
          "a list, a generator and a DataLoader of the same batches give different quant_params.json")
    x = torch.randn(3, 3, 16, 16)
    reference = torch.jit.load(os.path.join("list", "model.qforge.pt"))
    with torch.no_grad():
        check(torch.equal(as_list(x), reference(x)), "the returned module differs from model.qforge.pt")
    check(as_list.onnx_path and os.path.exists(as_list.onnx_path), "no ONNX file for onnxruntime")
    check(as_list.report["layers"][0]["decision"] == "quantize", "the report is not attached")


def test_tensor_tuple_dict_and_args_kwargs_samples(work):
    torch.manual_seed(1)
    model = TwoInputs().eval()
    samples = text(3)
    x = text(1, seed=5)[0]
    with torch.no_grad():
        expected = model(*x)
    forms = {
        "tuple": (samples, lambda m: m(*x)),
        "kwargs": ([{"input_ids": i, "attention_mask": m} for i, m in samples],
                   lambda m: m(input_ids=x[0], attention_mask=x[1])),
        "args_kwargs": ([(i, {"attention_mask": m, "scale": 1.0}) for i, m in samples],
                        lambda m: m(x[0], {"attention_mask": x[1], "scale": 1.0})),
    }
    for name, (data, call) in forms.items():
        compiled = qforge.compile(model, calibration_inputs=data, deployment_settings=qforge.LibTorchSettings(),
                                  quantization_settings={}, out_dir=name, progress=False)
        with torch.no_grad():
            y = call(compiled)
        print(f"{name}: {sqnr(expected, y):.1f} dB against the float model")
        check(sqnr(expected, y) > 25, f"{name}: {sqnr(expected, y):.1f} dB")
    torch.manual_seed(1)
    as_dict = DictInput().eval()
    data = [{"input_ids": i, "attention_mask": m} for i, m in samples]
    compiled = qforge.compile(as_dict, calibration_inputs=data, deployment_settings=qforge.LibTorchSettings(),
                              quantization_settings={}, out_dir="dict", progress=False)
    with torch.no_grad():
        y = compiled({"input_ids": x[0], "attention_mask": x[1]})
    check(sqnr(expected, y) > 25, f"dict argument: {sqnr(expected, y):.1f} dB")
    layers = [l["name"] for l in compiled.report["layers"]]
    check(layers == ["inner.embed", "inner.fc"], f"layer names are the module's own: {layers}")


def test_two_tracing_inputs_make_their_differing_axes_dynamic(work):
    import onnx
    tracing = [torch.randn(1, 3, 16, 16), torch.randn(2, 3, 24, 20)]
    qforge.compile(net(), tracing_inputs=tracing, calibration_inputs=images(2), deployment_settings=ort(),
                   quantization_settings={}, out_dir="dynamic", progress=False)
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in onnx.load("dynamic/model.qforge.onnx").graph.input]
    check(dims == [["batch", 3, "height", "width"]], f"ONNX input axes {dims}")
    qforge.compile(net(), tracing_inputs=[torch.randn(1, 3, 16, 16)], calibration_inputs=images(2),
                   deployment_settings=ort(), quantization_settings={}, out_dir="fixed", dynamic=False,
                   progress=False)
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in onnx.load("fixed/model.qforge.onnx").graph.input]
    check(dims == [[1, 3, 16, 16]], f"dynamic=False: ONNX input axes {dims}")


def test_forward_fn_and_a_bound_method(work):
    model = net()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected = model.infer(x, 3.0)
    by_method = qforge.compile(model.infer, calibration_inputs=[(t, {"scale": 3.0}) for t in images(2)],
                               deployment_settings=qforge.LibTorchSettings(), quantization_settings={},
                               out_dir="method", progress=False)
    by_fn = qforge.compile(model, calibration_inputs=images(2), deployment_settings=qforge.LibTorchSettings(),
                           quantization_settings={}, out_dir="forward_fn", progress=False,
                           forward_fn=lambda m, args, kwargs: m.infer(*args, scale=3.0, **kwargs))
    for name, compiled in (("model.infer", by_method), ("forward_fn", by_fn)):
        with torch.no_grad():
            y = compiled(x, {"scale": 3.0}) if name == "model.infer" else compiled(x)
        check(sqnr(expected, y) > 25, f"{name}: {sqnr(expected, y):.1f} dB against model.infer(x, 3.0)")
        layers = [l["name"] for l in compiled.report["layers"]]
        check(layers == ["conv", "fc1", "fc2"], f"{name}: layers {layers} (not the module's names)")


def test_ranks_1_2_and_3_are_byte_identical(work):
    data = images(6)
    for ranks in (1, 2, 3):
        qforge.compile(net(), calibration_inputs=data, deployment_settings=ort(), quantization_settings={},
                       out_dir=f"ranks{ranks}", ranks=ranks, progress=False)
    check(quant_params("ranks1") == quant_params("ranks2") == quant_params("ranks3"),
          "quant_params.json differs between 1, 2 and 3 ranks")
    report = json.load(open("ranks3/report.json"))
    check(report["ranks"] == 3 if "ranks" in report else True, "the report counts 3 ranks")


def test_every_argument_changes_the_outcome(work):
    data = images(3)
    base = dict(calibration_inputs=data, deployment_settings=ort(), quantization_settings={}, progress=False)
    plain = qforge.compile(net(), out_dir="plain", **base)
    scales = {l["name"]: l["activations"]["scale"][0] for l in plain.report["layers"]}

    # data_transform_fn: inputs scaled by 4 give the first layer 4 times the input scale
    scaled = qforge.compile(net(), out_dir="transform", data_transform_fn=lambda x: x * 4, **base)
    ratio = scaled.report["layers"][0]["activations"]["scale"][0] / scales["conv"]
    check(3.5 < ratio < 4.5, f"data_transform_fn: the conv's input scale changed by {ratio}")
    # quantization_settings and layer_quantization_settings
    four = qforge.compile(net(), out_dir="w4", **dict(base, deployment_settings=qforge.LibTorchSettings(),
                                                         quantization_settings=qforge.QuantizationSettings(
                                                             weights=qforge.WeightQuantSettings(bits=4))))
    check({l["weights"]["bits"] for l in four.report["layers"]} == {4}, "weights.bits=4 not applied")
    skip = qforge.compile(net(), out_dir="skip", layer_quantization_settings={"fc2": {"skip": True}}, **base)
    check([l["decision"] for l in skip.report["layers"]] == ["quantize", "quantize", "float"],
          "layer_quantization_settings skip fc2")
    # deployment_settings: the target's scheme (TensorRT: symmetric int8 activations)
    trt = qforge.compile(net(), out_dir="trt", **dict(base, deployment_settings=qforge.TensorRTSettings()))
    check(trt.report["layers"][0]["activations"]["zero_point"] == [0], "tensorrt's activations are symmetric")
    # logs_dir, graph_name
    named = qforge.compile(net(), out_dir="named", logs_dir="my_logs", graph_name="my_net", **base)
    check(os.path.exists("my_logs/rank-0.log"), "logs_dir: no rank-0.log there")
    check(named.report["graph_name"] == "my_net", f"graph_name: {named.report.get('graph_name')}")
    # compile_options: the sensitivity analysis
    sens = qforge.compile(net(), out_dir="sens", compile_options=qforge.CompileOptions(sensitivity=True), **base)
    check(all("sensitivity" in l for l in sens.report["layers"]), "compile_options.sensitivity")
    # is_model_pretrained=False: plain min/max ranges, with a note
    untrained = qforge.compile(net(), out_dir="untrained", is_model_pretrained=False,
                               **dict(base, deployment_settings=qforge.TensorRTSettings()))  # percentile ranges
    check(any("is_model_pretrained" in n for n in untrained.report.get("notes", [])),
          f"is_model_pretrained: notes {untrained.report.get('notes')}")
    # is_dry_run: the plan, and no model
    plan = qforge.compile(net(), out_dir="dry", is_dry_run=True, **base)
    check(isinstance(plan, qforge.DryRunPlan) and not os.path.exists("dry/model.qforge.pt"),
          "is_dry_run wrote a model or returned no plan")
    # skip_eval_set_mode and discard_input_model=False: the module's mode is left as it was
    model = net().train()
    with pytest.raises(qforge.ExportError, match="batch norm in training mode"):  # ONNX takes eval() models
        qforge.compile(model, out_dir="train_mode", skip_eval_set_mode=True, discard_input_model=False, **base)
    check(model.training, "skip_eval_set_mode + discard_input_model=False changed the module's mode")
    model = net().train()
    qforge.compile(model, out_dir="eval_mode", discard_input_model=False, **base)
    check(model.training, "discard_input_model=False: the module is back in training mode")
    # disable: the module itself, nothing run
    model = net()
    check(qforge.compile(model, out_dir="disabled", disable=True, **base) is model and not os.path.exists("disabled"),
          "disable=True")
    # fullgraph=False keeps a layer the method uses functionally in floating point
    class Functional(Net):
        def forward(self, x):
            x = torch.relu(self.bn(self.conv(x))).mean((2, 3))
            return torch.nn.functional.linear(torch.relu(self.fc1(x)), self.fc2.weight * 1.0, self.fc2.bias)
    torch.manual_seed(0)
    with pytest.raises(qforge.ModelError) as e:
        qforge.compile(Functional().eval(), out_dir="fullgraph", **base)
    check("fc2" in str(e.value), f"fullgraph=True names the layer: {e.value}")
    torch.manual_seed(0)
    loose = qforge.compile(Functional().eval(), out_dir="loose", fullgraph=False, **base)
    check([l["decision"] for l in loose.report["layers"]] == ["quantize", "quantize", "float"], "fullgraph=False")


def test_pruning_settings_as_clika_passes_them(work):
    # PruningSettings beside the quantization: fc1 pruned 2:4, fc2 kept dense by its override,
    # the conv's 3 input channels too few for 2:4 (dense, with the reason).
    compiled = qforge.compile(net(), calibration_inputs=images(3), deployment_settings=ort(), quantization_settings={},
                              pruning_settings=qforge.PruningSettings(method="wanda", pattern="2:4"),
                              layer_quantization_settings={"fc2": {"pruning": {"enabled": False}}},
                              out_dir="pruned", progress=False)
    layers = {l["name"]: l for l in compiled.report["layers"]}
    check(layers["fc1"]["pruning"]["pattern"] == "2:4", f"fc1: {layers['fc1'].get('pruning')}")
    check("disabled by layer_quantization_settings[fc2]" in layers["fc2"]["pruning"]["dense"], f"{layers['fc2']}")
    check("not a multiple of M=4" in layers["conv"]["pruning"]["dense"], f"{layers['conv']}")
    w = torch.jit.load("pruned/model.qforge.pt").fc1.weight
    check(bool(((w.reshape(16, 2, 4) != 0).sum(2) <= 2).all()), "fc1 is not 2:4 in model.qforge.pt")
    with pytest.raises(qforge.ConfigError, match="pruning_settings.sparsity"):
        qforge.compile(net(), calibration_inputs=images(2), pruning_settings={"sparsity": 1.5}, out_dir="bad",
                       progress=False)


def test_clika_compile_is_the_same_call(work):
    import inspect
    signature = inspect.signature(qforge.clika_compile)
    for name in ("module_or_func", "tracing_inputs", "calibration_inputs", "deployment_settings", "data_transform_fn",
                 "forward_fn", "quantization_settings", "layer_quantization_settings", "logs_dir",
                 "clika_compile_options", "discard_input_model", "is_model_pretrained", "is_dry_run",
                 "skip_eval_set_mode", "graph_name", "fullgraph", "dynamic", "disable"):
        check(name in signature.parameters, f"clika_compile has no argument {name}")
    compiled = qforge.clika_compile(net(), calibration_inputs=images(2), deployment_settings=ort(),
                                    quantization_settings={}, out_dir="clika", progress=False,
                                    clika_compile_options={"sensitivity": True})
    check("sensitivity" in compiled.report["layers"][0], "clika_compile_options reached the engine")
    with pytest.raises(ValueError):
        qforge.clika_compile(net(), calibration_inputs=images(2), quantization_settings={})
    with pytest.raises(ValueError):
        qforge.compile(net(), deployment_settings=ort(), quantization_settings={})


def test_exit_codes_are_exceptions_with_the_engine_message(work):
    base = dict(deployment_settings=ort(), quantization_settings={}, progress=False)
    cases = [
        (qforge.ConfigError, "matches no layer", dict(calibration_inputs=images(2),
                                                      layer_quantization_settings={"nope.*": {"skip": True}})),
        (qforge.DataError, "NaN", dict(calibration_inputs=[torch.full((4, 3, 16, 16), float("nan"))])),
        (qforge.ExportError, "aten::cumprod", dict(calibration_inputs=images(2), module=CumProd())),
    ]
    for i, (cls, words, kwargs) in enumerate(cases):
        model = kwargs.pop("module", None) or net()
        with pytest.raises(cls) as e:
            qforge.compile(model, out_dir=f"fail{i}", **base, **kwargs)
        print(f"{cls.__name__} (exit {e.value.exit_code}): {e.value.message[:160]}")
        check(words in e.value.message, f"{cls.__name__}: '{words}' not in {e.value.message}")
    with open("a_file", "w") as f:
        f.write("x")
    with pytest.raises(qforge.OutputError) as e:
        qforge.compile(net(), out_dir="a_file", calibration_inputs=images(2), **base)
    check("a_file" in e.value.message and e.value.exit_code == 8, f"OutputError: {e.value.message}")


class CumProd(Net):
    def forward(self, x):
        return super().forward(x).cumprod(1)


def test_bad_input_is_named(work):
    base = dict(deployment_settings=ort(), quantization_settings={}, progress=False)
    # sample 2 is a tuple where sample 0 was a tensor
    with pytest.raises(qforge.DataError, match="sample 2 is a tuple of 2 tensors, but sample 0 was a tensor"):
        qforge.compile(net(), calibration_inputs=images(2) + [(torch.randn(4, 3, 16, 16),) * 2], **base)
    # a leaf that is not a tensor
    with pytest.raises(qforge.DataError, match=r"sample 0\[1\] is a str"):
        qforge.compile(TwoInputs(), calibration_inputs=[(torch.zeros(4, 8, dtype=torch.long), "mask")], **base)
    # a settings field of the wrong type, named by its YAML key
    with pytest.raises(qforge.ConfigError, match=r"quantization_settings\.weights\.bits: expected int"):
        qforge.compile(net(), calibration_inputs=images(2), deployment_settings=ort(),
                       quantization_settings={"weights": {"bits": "eight"}}, progress=False)
    with pytest.raises(AttributeError, match="did you mean 'bits'"):
        qforge.WeightQuantSettings(bitz=4)
    # a model that cannot be traced: the error names the line and suggests script / forward_fn
    class Untraceable(Net):
        def forward(self, x):
            return {"logits": super().forward(x), "note": "text"}
    with pytest.raises(qforge.ModelError, match="capture_with='script'|forward_fn"):
        qforge.compile(Untraceable(), calibration_inputs=images(1), **base)
    # no engine: an install hint
    old = os.environ.get("QFORGE_BIN")
    os.environ["QFORGE_BIN"] = "/nonexistent/qforge"
    try:
        with pytest.raises(qforge.EngineNotFound, match="jobs/setup.sh"):
            qforge.compile(net(), calibration_inputs=images(1), **base)
    finally:
        os.environ["QFORGE_BIN"] = old


def test_calibration_data_streams_without_loading_whole(work):
    """A generator of 576 MiB of samples is written with the process growing by far less (the limit
    this test sets: a quarter of it, 144 MiB; about 50 MiB idle, 100 MiB beside other tests): a
    sample at a time is in memory, and HDF5's chunks."""
    script = """
import resource, sys, torch
sys.path.insert(0, sys.argv[1])
from qforge import capture
def samples():
    for i in range(96):
        yield torch.randn(32, 3, 128, 128)  # 6 MiB each, 576 MiB in all
torch.randn(32, 3, 128, 128); import h5py  # the first allocation and h5py's own start-up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
_, _, _, rows = capture.write_inputs("big.h5", samples(), lambda s: capture.structure_of(s, ["x"], False))
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(f"{rows} rows written; peak resident memory grew by {grown:.1f} MiB")
"""
    p = subprocess.run([sys.executable, "-c", script, os.path.join(qt.SOURCE, "src", "python")],
                       capture_output=True, text=True, timeout=300)
    check(p.returncode == 0, p.stderr)
    print(p.stdout.strip())
    grown = float(p.stdout.split("grew by ")[1].split(" ")[0])
    check(grown < 144, f"writing 576 MiB of samples grew the process by {grown} MiB")
    check(os.path.getsize("big.h5") > 570 * 2 ** 20, "the file holds every sample")


def test_ctrl_c_ends_the_engine_and_leaves_nothing_half_written(work):
    """SIGINT to the calling process while the engine fine-tunes on 2 ranks: the ranks end, and
    out_dir holds no artifact set (the engine renames a complete set into place, or nothing)."""
    script = f"""
import sys, torch
sys.path.insert(0, {os.path.join(qt.SOURCE, 'src', 'python')!r}); sys.path.insert(0, {HERE!r})
import qforge, test_qforge_api as t
qforge.compile(t.net(), calibration_inputs=t.images(8), deployment_settings=qforge.LibTorchSettings(),
               quantization_settings={{}}, out_dir="interrupted", ranks=2,
               compile_options={{"fine_tune": {{"enabled": True, "steps": 100000, "batch_size": 4}}}})
"""
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not os.path.exists("interrupted/logs/rank-1.log"):
        time.sleep(0.2)
    time.sleep(3.0)  # fine-tuning under way
    check(p.poll() is None, "the compile ended before it could be interrupted")
    p.send_signal(signal.SIGINT)
    out = p.communicate(timeout=120)[0]
    check(p.returncode != 0 and "KeyboardInterrupt" in out, f"exit {p.returncode}: {out[-500:]}")
    left = subprocess.run(["pgrep", "-f", "interrupted.inputs/experiment.yaml"], capture_output=True, text=True)
    check(not left.stdout.strip(), f"engine processes left running: {left.stdout}")
    artifacts = os.listdir("interrupted")
    check("model.qforge.pt" not in artifacts and not any(a.startswith(".staging") for a in artifacts),
          f"out_dir after the interrupt: {artifacts}")


def test_torchvision_model_gives_the_clis_figures(work):
    """MobileNetV2 through qforge.compile, and the experiment it wrote run again by the CLI
    (`qforge compile <out_dir>.inputs/experiment.yaml`): the same quant_params.json, byte for byte."""
    import torchvision
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10).eval()
    compiled = qforge.compile(model, calibration_inputs=images(3, size=32), evaluation_inputs=images(2, size=32, seed=1),
                              deployment_settings=ort(), quantization_settings={}, out_dir="python_call",
                              progress=False)
    quantized = sum(l["decision"] == "quantize" for l in compiled.report["layers"])
    print(f"mobilenet_v2: {quantized} layers quantized, evaluation {compiled.report['evaluation']}")
    check(quantized == 53, f"{quantized} layers quantized")
    qt.run(["compile", "python_call.inputs/experiment.yaml", "--set", f"out_dir={work}/cli"], timeout=300)
    check(quant_params("python_call") == quant_params("cli"), "the Python call and the CLI disagree")
