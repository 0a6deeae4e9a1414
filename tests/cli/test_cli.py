"""Command-line tests: the qforge binary as a user runs it, alone and under mpirun.
Each test_* function is a ctest case (cli_<case>): `python3 -m pytest test_cli.py::test_<case>`."""
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import qforge_testing as qt  # noqa: E402
from qforge_testing import (ASSETS, MPIEXEC, QFORGE, SOURCE, artifacts, check, compile_config, contains,  # noqa: E402
                            freeze_mid_fine_tune, freeze_when, log_grew, run, send, write_config)


@pytest.fixture(autouse=True)
def work():
    with qt.work_dir("qforge-cli-") as path:
        yield path


def image_config(extra="", out="out"):
    return write_config("exp.yaml", f"""
model: {{path: {ASSETS}/resnet18_traced.pt}}
out_dir: {out}
calibration_inputs: {{files: [{ASSETS}/images.h5], batch_size: 4}}
tracing_inputs: {{batch_sizes: [1, 2]}}
deployment_settings: {{target: libtorch}}
quantization_settings: {{weights: {{bits: 8}}}}
layer_quantization_settings: {{'layer4.*': {{skip: true}}, fc: {{weights: {{bits: 4}}}}}}
""" + extra)


def dry_run_resnet(ranks):
    out = run(["compile", image_config(), "--dry-run"], ranks=ranks)
    plan = json.load(open(os.path.join(qt.WORK, "out", "plan.json")))
    shards = plan["shards"]
    check(len(shards) == max(ranks, 1), f"{len(shards)} shards for {ranks} ranks")
    check(sum(s["rows"] for s in shards) == 37, "shards must cover the 37 rows")
    starts = [s["first_row"] for s in shards]
    check(starts == sorted(starts) and starts[0] == 0, "shards are contiguous and ordered")
    for a, b in zip(shards, shards[1:]):
        check(a["first_row"] + a["rows"] == b["first_row"], "no gap or overlap between shards")
    decisions = {l["name"]: l for l in plan["layers"]}
    check(len(decisions) == 21, "resnet18 has 21 quantizable layers")
    check(decisions["layer4.0.conv1"]["decision"] == "skip", "layer4.* is skipped")
    check(decisions["fc"]["weights"]["bits"] == 4, "fc override applies")
    check(plan["tracing"][0]["dynamic_axes"] == [0, 2, 3], f"dynamic axes: {plan['tracing']}")
    check("batch_size: 4" in plan["config"], "plan.json records the resolved experiment")
    for r in range(max(ranks, 1)):
        contains(out, f"rank {r} on")
    contains(out, "dynamic axes [0, 2, 3]", "plan written to")
    for r in range(max(ranks, 1)):
        check(os.path.exists(os.path.join(qt.WORK, "out", "logs", f"rank-{r}.log")), f"log of rank {r}")


def test_help_and_version():
    contains(run(["--help"]), "compile CONFIG", "inspect MODEL", "data check")
    contains(run(["compile", "--help"]), "--set KEY=VALUE", "--dry-run")
    contains(run(["inspect", "--help"]), "usage: qforge inspect")
    contains(run(["data", "check", "--help"]), "usage: qforge data check")
    version = run(["--version"])
    contains(version, "qforge 0.", "LibTorch", "HDF5")
    # GPU builds link NCCL and say which; CPU builds say it is not built.
    contains(version, "NCCL 2." if "CUDA available" in version else "NCCL: not built")
    contains(run(["compil"], expect=2), "did you mean 'compile'")
    contains(run(["compile", "x.yaml", "--dryrun"], expect=2), "did you mean --dry-run")
    # Numbers are whole: "12abc" or "-1" is refused with the option named, not read as 12.
    contains(run(["compile", "x.yaml", "--sweep-task", "12abc"], expect=2), "--sweep-task", "non-negative integer", "12abc")
    contains(run(["export", "out", "--opset=-1"], expect=2), "--opset", "non-negative integer")
    contains(run(["data", "check", "a.h5", "--batch-size", "0"], expect=2), "--batch-size", "at least 1")
    contains(run(["export", "out", "-o"], expect=2), "option --output needs a value")
    # Repeated --set keeps every value, in order, with or without '='.
    contains(run(["compile", "--set=a=1", "--set", "b=2"], expect=2), "expected one CONFIG file")


def test_inspect_torchvision_models():
    out = run(["inspect", f"{ASSETS}/resnet18_traced.pt"])
    contains(out, "forward(x: Tensor) -> Tensor", "layer4.1.conv2", "21 quantizable", "no: normalization")
    data = json.loads(run(["inspect", f"{ASSETS}/mobilenet_v2_scripted.pt", "--json"]))
    check(sum(l["quantizable"] for l in data["layers"]) == 53, "mobilenet_v2 quantizable layers")
    check(data["inputs"][0]["name"] == "x", "method inputs")


def test_dry_run_resnet18_1_rank():
    dry_run_resnet(0)  # no launcher at all


def test_dry_run_resnet18_2_ranks():
    dry_run_resnet(2)


def test_dry_run_resnet18_3_ranks():
    dry_run_resnet(3)


def test_dry_run_tuple_inputs():
    cfg = write_config("t.yaml", f"""
model: {{path: {ASSETS}/tuple_model.pt}}
out_dir: out_t
calibration_inputs: {{files: [{ASSETS}/text_tuple.h5], batch_size: 5}}
""")
    out = run(["compile", cfg, "--dry-run"], ranks=2)
    contains(out, "tuple samples (ids, mask)", "input 'ids'", "dynamic axes [1]")


def test_dry_run_dict_inputs():
    cfg = write_config("d.yaml", f"""
model: {{path: {ASSETS}/dict_model.pt}}
out_dir: out_d
calibration_inputs: {{files: [{ASSETS}/text_dict.h5], batch_size: 5}}
tracing_inputs: {{batch_sizes: [1, 3]}}
""")
    out = run(["compile", cfg, "--dry-run"], ranks=3)
    contains(out, "dict samples (input_ids, attention_mask)", "forward(batch: Dict(str, Tensor))",
             "dynamic axes [0, 1]")


def test_dry_run_static_kwargs():
    cfg = write_config("k.yaml", f"""
model: {{path: {ASSETS}/kwargs_model.pt}}
out_dir: out_k
calibration_inputs: {{files: [{ASSETS}/vectors.h5]}}
forward: {{kwargs: {{scale: 0.5, use_relu: true}}}}
""")
    run(["compile", cfg, "--dry-run"])
    out = run(["compile", cfg, "--dry-run", "--set", "forward.kwargs.scale=abc"], expect=5)
    contains(out, "forward.kwargs.scale", "'abc'")


def test_dry_run_writes_only_plan_and_logs(work):
    run(["compile", image_config(out="only"), "--dry-run"], ranks=2)
    files = sorted(os.path.relpath(os.path.join(d, f), os.path.join(work, "only"))
                   for d, _, fs in os.walk(os.path.join(work, "only")) for f in fs)
    check(files == ["logs/rank-0.log", "logs/rank-1.log", "plan.json"], f"dry run wrote {files}")


def test_config_show_and_set():
    out = run(["config", "show", image_config(), "--set", "calibration_inputs.batch_size=16",
               "--set", "layer_quantization_settings[layer1.0.conv1].skip=true"])
    contains(out, "batch_size: 16", "layer1.0.conv1:", "discard_input_model: true")
    keys = run(["config", "keys"])
    contains(keys, "quantization_settings.weights.granularity", "resources.gpus_per_node")


def test_error_unknown_yaml_key():
    cfg = image_config(extra="calibraton_inputs: {}\n")
    out = run(["compile", cfg, "--dry-run"], ranks=2, expect=3)
    contains(out, "exp.yaml", "unknown key 'calibraton_inputs'", "did you mean 'calibration_inputs'")
    check(out.count("unknown key") == 1, "the error is printed once, not once per rank")


def test_error_wrong_yaml_type():
    out = run(["compile", image_config(), "--dry-run", "--set", "quantization_settings.weights.bits=[4]"], expect=3)
    contains(out, "quantization_settings.weights.bits", "expected an integer")


def test_error_truncated_hdf5_3_ranks():
    out = run(["compile", image_config(), "--dry-run", "--set", f"calibration_inputs.files=[{ASSETS}/truncated.h5]"],
              ranks=3, expect=4, timeout=60)
    contains(out, "truncated.h5", "truncated")


def test_error_model_data_mismatch_2_ranks():
    out = run(["compile", image_config(), "--dry-run", "--set", f"model.path={ASSETS}/tuple_model.pt"],
              ranks=2, expect=5, timeout=60)
    contains(out, "tuple_model.pt", "forward(ids: Tensor, mask: Tensor)", "'mask' has no default")


def test_error_nan_on_one_rank():
    # nan.h5 has a NaN in row 7: only the last of 2 ranks (rows 5..9) sees it.
    cfg = write_config("nan.yaml", f"""
model: {{path: {ASSETS}/resnet18_traced.pt}}
out_dir: out_nan
calibration_inputs: {{files: [{ASSETS}/nan.h5], batch_size: 2}}
""")
    out = run(["compile", cfg, "--dry-run"], ranks=2, expect=4, timeout=60)
    contains(out, "nan.h5:/samples/s32/x", "row 7", "rank 1")


def test_error_missing_model():
    out = run(["compile", image_config(), "--dry-run", "--set", "model.path=nowhere.pt"], ranks=2, expect=5)
    contains(out, "nowhere.pt", "no such model file")


def test_error_not_a_model():
    out = run(["inspect", f"{ASSETS}/not_a_model.pt"], expect=5)
    contains(out, "not_a_model.pt", "TorchScript")


def test_error_layer_glob_matches_nothing():
    out = run(["compile", image_config(), "--dry-run", "--set", "layer_quantization_settings[layer9.*].skip=true"],
              expect=3)
    contains(out, "layer_quantization_settings[layer9.*]", "matches no layer", "closest layer names")


def test_error_cuda_without_gpu():
    has_gpu = "CUDA available" in run(["--version"])
    out = run(["compile", image_config(), "--dry-run", "--set", "device=cuda"], expect=0 if has_gpu else 3)
    contains(out, "plan written to" if has_gpu else "no CUDA device")


def test_error_quantization_without_target():
    out = run(["compile", image_config(), "--dry-run", "--set", "deployment_settings=null"], expect=3)
    contains(out, "deployment_settings.target")


def test_yaml_mistakes_are_named():
    """A key given twice, a tab in the indentation and a bad --set value are named as
    such: both lines, the tab's line, the --set argument (not line 1 of the file)."""
    base = image_config()
    text = open(base).read()
    twice = write_config("twice.yaml", text + "calibration_inputs: {files: [other.h5], batch_size: 8}\n")
    line = text.splitlines().index(next(l for l in text.splitlines() if l.startswith("calibration_inputs"))) + 1
    last = len(text.splitlines()) + 1
    contains(run(["compile", twice], expect=3), "key 'calibration_inputs' is given twice",
             f"(lines {line} and {last})")
    nested = write_config("nested.yaml", text.replace("batch_size: 4}", "batch_size: 4, batch_size: 8}"))
    contains(run(["config", "show", nested], expect=3), "key 'calibration_inputs.batch_size' is given twice")
    tabbed = write_config("tab.yaml", "model:\n  path: m.pt\nquantization_settings:\n\tweights: {bits: 8}\n")
    contains(run(["config", "show", tabbed], expect=3), "line 4 is indented with a tab")
    for assignment, expected in (("calibration_inputs.batch_size=abc", "expected an integer"),
                                 ("quantization_settings.weights.granularity=row", "granularity"),
                                 ("calibration_inputs.batch_sise=4", "unknown key")):
        out = run(["config", "show", base, "--set", assignment], expect=3)
        contains(out, f"(--set {assignment})", expected)
        check("(line 1)" not in out, f"a --set error blamed on line 1 of the file:\n{out}")


def test_hints_for_common_mistakes(work):
    """float64 data for a float32 model names the cast that fixes it; an unreadable
    checkpoint names resume: false; long layer names keep the table's columns; a
    small model's sizes are not "0.0 MiB"."""
    import numpy as np
    import torch
    from qforge_h5 import write_samples
    long_name = "encoder_block_0_attention_output_projection_with_a_long_name"

    class Named(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.add_module(long_name, torch.nn.Linear(8, 8))
            self.head = torch.nn.Linear(8, 4)

        def forward(self, x):
            return self.head(torch.relu(getattr(self, long_name)(x)))

    model = os.path.join(work, "named.pt")
    torch.jit.trace(Named().eval(), torch.randn(2, 8)).save(model)
    data = os.path.join(work, "doubles.h5")
    write_samples(data, "tensor", ["x"], {"all": {"x": np.random.default_rng(0).standard_normal((12, 8))}})
    cfg = write_config("named.yaml", f"""
model: {{path: {model}}}
out_dir: named
calibration_inputs: {{files: [{data}], batch_size: 4}}
deployment_settings: {{target: libtorch}}
quantization_settings: {{}}
compile_options: {{fine_tune: {{enabled: true, steps: 4, batch_size: 4}}}}
""")
    contains(run(["compile", cfg], expect=5), "the data is float64", "data_transform: [{op: cast, dtype: float32}]")
    cast = ["--set", "data_transform=[{op: cast, dtype: float32}]"]
    out = run(["compile", cfg] + cast)
    row = next(line for line in out.splitlines() if line.strip().startswith(long_name))
    check(row.split(long_name)[1].startswith("  "), f"the long name runs into the next column:\n{row}")
    contains(out, "432 B float ->")  # 8*8+8 + 8*4+4 float32 parameters
    check("0.0 MiB" not in out, f"a small model's sizes in MiB:\n{out}")
    os.makedirs(os.path.join(work, "named", "checkpoints"), exist_ok=True)
    with open(os.path.join(work, "named", "checkpoints", "fine_tune.pt"), "wb") as f:
        f.write(b"PK\x03\x04 a truncated archive")
    contains(run(["compile", cfg] + cast, expect=4), "fine_tune.pt: cannot read the fine-tuning checkpoint",
             "compile_options.fine_tune.resume: false")


def test_help_after_every_subcommand():
    for command in (["compile"], ["submit"], ["inspect"], ["export"], ["report"], ["data"], ["data", "check"],
                    ["config"], ["config", "keys"], ["config", "show"]):
        out = run(command + ["--help"])
        contains(out, "usage: qforge")


def test_compile_quant_params_identical_on_1_to_4_ranks(work):
    # Every observer, symmetric and not, weights per channel, per group and per
    # tensor, plus the sensitivity analysis: byte-identical on 1, 2, 3, 4 ranks.
    cfg = compile_config("inv.yaml", "resnet18_traced.pt", "images.h5", 4, "libtorch", """
compile_options: {sensitivity: true, sensitivity_samples: 4}
layer_quantization_settings:
  'layer1.*': {activations: {observer: percentile, percentile: 99.9}}
  'layer2.*': {activations: {observer: entropy, symmetric: true, signed: true}}
  'layer3.*': {activations: {observer: mse}, weights: {observer: mse, granularity: group, group_size: 32}}
  'layer4.*': {weights: {bits: 4, granularity: tensor}, activations: {observer: mse, symmetric: true, signed: true}}
""")
    params = {}
    for ranks in (0, 2, 3, 4):
        run(["compile", cfg, "--set", f"out_dir=inv{ranks}"], ranks=ranks, timeout=240)
        params[ranks] = open(os.path.join(work, f"inv{ranks}", "quant_params.json"), "rb").read()
    for ranks in (2, 3, 4):
        check(params[ranks] == params[0], f"quant_params.json on {ranks} ranks differs from 1 rank")
    layers = {l["name"]: l for l in json.loads(params[0])["layers"]}
    check(layers["layer1.0.conv1"]["activations"]["observer"] == "percentile", "glob layer1.*")
    check(layers["layer2.0.conv1"]["activations"]["observer"] == "entropy", "glob layer2.*")
    check(layers["layer3.0.conv1"]["weights"]["group_size"] == 32, "groups in layer3")
    check(layers["layer4.1.conv2"]["weights"]["bits"] == 4, "layer4 at 4 bits")
    check(layers["conv1"]["activations"]["observer"] == "minmax", "the global observer elsewhere")
    check(all("sensitivity" in l for l in layers.values()), "every layer has its sensitivity")
    report = json.load(open(os.path.join(work, "inv4", "report.json")))
    check(report["ranks"] == 4 and len(report["phases"][0]["seconds_per_rank"]) == 4, "report: time per rank")


def check_compiled_model_runs_in_python(out, original, samples):
    """The artifact loads in Python's torch without qforge and tracks the float model."""
    import torch
    compiled = torch.jit.load(os.path.join(qt.WORK, out, "model.qforge.pt"))
    reference = torch.jit.load(os.path.join(ASSETS, original)).eval()
    check("fake_quantize" in str(compiled.inlined_graph), "the model computes with fake quantization")
    with torch.no_grad():
        y, e = compiled(*samples), reference(*samples)
    error = ((y - e).norm() / e.norm()).item()
    check(error < 0.2, f"{out}: compiled output differs from float by {error}")


def test_compile_multi_input_and_mobilenet_load_in_python(work):
    import h5py
    import torch
    cfg = compile_config("tuple.yaml", "tuple_model.pt", "text_tuple.h5", 5, "onnxruntime")
    out = run(["compile", cfg, "--set", "out_dir=tuple"], ranks=2)
    contains(out, "compiled 'tuple_model' on 2 rank(s)", "evaluation on 26 held-out rows")
    check(artifacts("tuple") == ["config.yaml", "logs", "model.qforge.onnx", "model.qforge.pt", "quant_params.json",
                                 "report.html", "report.json", "summary.txt"], f"artifacts: {artifacts('tuple')}")
    with h5py.File(os.path.join(ASSETS, "text_tuple.h5")) as f:
        ids = torch.from_numpy(f["samples/len12/ids"][:4])
        mask = torch.from_numpy(f["samples/len12/mask"][:4])
    check_compiled_model_runs_in_python("tuple", "tuple_model.pt", (ids, mask))

    cfg = compile_config("mobilenet.yaml", "mobilenet_v2_scripted.pt", "images.h5", 8, "tensorrt")
    run(["compile", cfg, "--set", "out_dir=mobilenet"], ranks=2, timeout=240)
    params = json.load(open(os.path.join(work, "mobilenet", "quant_params.json")))
    check(sum(l["decision"] == "quantize" for l in params["layers"]) == 53, "mobilenet_v2: 53 layers quantized")
    check(len(params["folded_batch_norm_into"]) == 52, "mobilenet_v2: 52 batch norms folded")
    with h5py.File(os.path.join(ASSETS, "images.h5")) as f:
        x = torch.from_numpy(f["samples/s32/x"][:4])
    check_compiled_model_runs_in_python("mobilenet", "mobilenet_v2_scripted.pt", (x,))


def test_compile_failure_keeps_earlier_artifacts(work):
    cfg = compile_config("keep.yaml", "resnet18_traced.pt", "images.h5", 4, "tensorrt")
    run(["compile", cfg, "--set", "out_dir=keep"], ranks=2)
    before = {name: open(os.path.join(work, "keep", name), "rb").read() for name in ("quant_params.json", "report.json")}
    out = run(["compile", cfg, "--set", "out_dir=keep", "--set", f"evaluation_inputs.files=[{ASSETS}/nan.h5]",
               "--set", "evaluation_inputs.batch_size=2"], ranks=2, expect=4)
    contains(out, "nan.h5", "row 7")
    for name, content in before.items():
        check(open(os.path.join(work, "keep", name), "rb").read() == content, f"{name} was changed by a failed run")
    check(not [f for f in artifacts("keep") if ".tmp" in f], f"temporary files left: {artifacts('keep')}")


def test_dry_run_finds_layers_the_data_never_runs(work):
    """The dry run is the compile's first stage: a layer whose weight feeds functional
    code (a matmul with its transpose) or a branch the calibration data never takes
    fails both by name, or stays float with fullgraph: false."""
    import torch

    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 8)
            self.rare = torch.nn.Linear(8, 8)
            self.head = torch.nn.Linear(8, 4)

        def forward(self, x):
            h = torch.relu(self.fc(x))
            if bool(h.abs().sum() > 1e9):  # never on the calibration data
                h = self.rare(h)
            return self.head(h)

    class Functional(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 8)
            self.proj = torch.nn.Linear(8, 8)
            self.head = torch.nn.Linear(8, 4)

        def forward(self, x):
            return self.head(torch.matmul(torch.relu(self.fc(x)), self.proj.weight.t()))

    torch.manual_seed(0)
    model = os.path.join(work, "branchy.pt")
    torch.jit.script(Branchy().eval()).save(model)
    functional = os.path.join(work, "functional.pt")
    with torch.no_grad():
        torch.jit.trace(Functional().eval(), torch.randn(2, 8)).save(functional)
    # The branch has no ONNX form: TensorRT's preset observes with histograms
    # without exporting (deployment_settings.onnx: false).
    for name, path, data, layer in (("branchy", model, f"{ASSETS}/vectors.h5", "rare"),
                                    ("functional", functional, f"{ASSETS}/vectors.h5", "proj")):
        cfg = write_config(f"{name}.yaml", f"""
model: {{path: {path}}}
out_dir: {name}_out
calibration_inputs: {{files: [{data}], batch_size: 2}}
deployment_settings: {{target: tensorrt, onnx: {'false' if name == 'branchy' else 'true'}}}
quantization_settings: {{}}
""")
        for dry in (["--dry-run"], []):
            out = run(["compile", cfg] + dry, ranks=2, expect=5, timeout=240)
            contains(out, f"layer '{layer}'", "fullgraph: false")
            check("observer:" not in out and "internal error" not in out, f"{name}: an anonymous error:\n{out}")
        run(["compile", cfg, "--dry-run", "--set", "fullgraph=false"], ranks=2)
        planned = {l["name"]: l for l in json.load(open(os.path.join(work, f"{name}_out", "plan.json")))["layers"]}
        check(planned[layer]["decision"] == "skip", f"{name}: the plan keeps {layer} float: {planned[layer]}")
        check(sum(l["decision"] == "quantize" for l in planned.values()) >= 2, f"{name}: the others quantize")
        run(["compile", cfg, "--set", "fullgraph=false"], ranks=2, timeout=240)
        layers = {l["name"]: l for l in json.load(open(os.path.join(work, f"{name}_out", "quant_params.json")))["layers"]}
        check(layers[layer]["decision"] == "float", f"{name}: {layer} stays float: {layers[layer]}")
        check(layers[layer]["reason"] == planned[layer]["reason"], f"{name}: the compile keeps the plan's reason")
        check(sum(l["decision"] != "float" for l in layers.values()) >= 2, f"{name}: the other layers quantize")
    contains(planned["proj"]["reason"], "does not read its weight directly")
    # A model of nested submodules (resnet's blocks) converts in the dry run after it
    # has run there: the conversion inlines a fresh copy.
    rn = compile_config("rn_dry.yaml", "resnet18_traced.pt", "images.h5", 4, "tensorrt")
    contains(run(["compile", rn, "--dry-run", "--set", "out_dir=rn_dry"], ranks=2), "the float graph converts")
    # What ONNX cannot express is found by the dry run too, before calibration.
    out = run(["compile", write_config("branchy.yaml", open(os.path.join(work, "branchy.yaml")).read().replace(
        "onnx: false", "onnx: true")), "--dry-run", "--set", "fullgraph=false"], ranks=2, expect=7)
    contains(out, "prim::If", "data-dependent control flow")


def test_compile_sensitivity_threshold_keeps_layers_float(work):
    cfg = compile_config("sens.yaml", "resnet18_traced.pt", "images.h5", 4, "tensorrt",
                         "compile_options: {sensitivity_samples: 8}\n")
    out = run(["compile", cfg, "--set", "out_dir=sens", "--set", "quantization_settings.activations.observer=entropy",
               "--set", "quantization_settings.sensitivity_threshold=0.05"], ranks=3, timeout=240)
    layers = json.load(open(os.path.join(work, "sens", "quant_params.json")))["layers"]
    kept = [l for l in layers if l["decision"] == "float"]
    check(kept, "the entropy-calibrated resnet has layers above the threshold")
    for l in layers:
        check((l["sensitivity"] > 0.05) == (l["decision"] == "float"), f"{l['name']}: threshold decides")
        if l["decision"] == "float":
            contains(l["reason"], "above sensitivity_threshold")
    contains(out, "float: sensitivity")


def test_compile_untrained_model_skips_clipping_and_sensitivity(work):
    # is_model_pretrained: false asks for what only trained weights support (entropy clipping,
    # a sensitivity threshold); the compile uses full min/max ranges, quantizes every layer,
    # and says so in the report and the summary.
    cfg = compile_config("untrained.yaml", "resnet18_traced.pt", "images.h5", 4, "tensorrt",
                         "compile_options: {sensitivity_samples: 8}\n")
    out = run(["compile", cfg, "--set", "out_dir=untrained", "--set", "is_model_pretrained=false",
               "--set", "quantization_settings.activations.observer=entropy",
               "--set", "quantization_settings.sensitivity_threshold=0.05"], ranks=2, timeout=240)
    contains(out, "is_model_pretrained: false", "sensitivity_threshold not applied")
    run(["compile", cfg, "--set", "out_dir=minmax", "--set", "quantization_settings.activations.observer=minmax"],
        ranks=2, timeout=240)
    untrained, minmax = (json.load(open(os.path.join(work, d, "quant_params.json")))["layers"]
                         for d in ("untrained", "minmax"))
    check([l["decision"] for l in untrained] == [l["decision"] for l in minmax], "every planned layer is quantized")
    for u, m in zip(untrained, minmax):
        if "activations" in m:
            check(u["activations"]["scale"] == m["activations"]["scale"], f"{u['name']}: min/max range, not clipped")
            check(u["activations"]["observer"] == "minmax", f"{u['name']}: the observer used is reported")
    notes = json.load(open(os.path.join(work, "untrained", "report.json")))["notes"]
    check(len(notes) == 2 and all("is_model_pretrained: false" in n for n in notes), f"report notes: {notes}")
    contains(open(os.path.join(work, "untrained", "summary.txt")).read(), "note: is_model_pretrained: false")


def test_compile_fine_tune_stopped_and_resumed_equals_uninterrupted(work):
    import torch
    cfg = compile_config("ft.yaml", "tuple_model.pt", "text_tuple.h5", 5, "libtorch", """
compile_options:
  checkpoint_every: 2
  fine_tune: {enabled: true, steps: 6, batch_size: 8, lora_rank: 4, learning_rate: 0.005, warmup_steps: 1}
""")
    run(["compile", cfg, "--set", "out_dir=ft_whole"], ranks=2)
    out = run(["compile", cfg, "--set", "out_dir=ft_parts", "--set", "compile_options.fine_tune.stop_after_steps=3"],
              ranks=3)
    contains(out, "stopped after step 3")
    check(artifacts("ft_parts") == ["checkpoints", "logs"], f"a stopped run writes its checkpoint only: {artifacts('ft_parts')}")
    out = run(["compile", cfg, "--set", "out_dir=ft_parts"], ranks=2)
    contains(out, "resumed from", "after step 3", "quantize + QA-LoRA")
    whole = json.load(open(os.path.join(work, "ft_whole", "report.json")))["fine_tune"]
    parts = json.load(open(os.path.join(work, "ft_parts", "report.json")))["fine_tune"]
    check(len(parts["loss"]) == 6, "the resumed run reports every step's loss")
    for a, b in zip(whole["loss"], parts["loss"]):
        check(abs(a - b) <= 1e-6 * abs(a), f"losses of the resumed run differ: {whole['loss']} vs {parts['loss']}")
    ids = torch.arange(24).reshape(2, 12) % 100
    mask = torch.ones_like(ids)
    y = [torch.jit.load(os.path.join(work, d, "model.qforge.pt"))(ids, mask) for d in ("ft_whole", "ft_parts")]
    check(torch.allclose(y[0], y[1], rtol=1e-4, atol=1e-5), "resumed and uninterrupted models differ")
    check(not os.path.exists(os.path.join(work, "ft_parts", "checkpoints", "fine_tune.pt")),
          "a finished run removes its checkpoint")
    # A stopped run's checkpoint is not resumed under other settings.
    run(["compile", cfg, "--set", "out_dir=ft_other", "--set", "compile_options.fine_tune.stop_after_steps=2"], ranks=2)
    out = run(["compile", cfg, "--set", "out_dir=ft_other", "--set", "compile_options.fine_tune.lora_rank=2"],
              ranks=2, expect=3)
    contains(out, "fine_tune.pt", "belongs to another model or other fine-tuning settings")


def test_sigterm_mid_calibration_says_so_and_leaves_no_lock(work):
    """SIGTERM to mpirun mid-calibration (a job cancelled, a Ctrl-C): the run ends with a line
    saying it was stopped by a signal and what out_dir keeps, removes its lock, and the next
    compile starts without taking a stale lock over."""
    import signal
    cfg = image_config(out="term")
    log = os.path.join(work, "term", "logs", "rank-0.log")
    cmd = [MPIEXEC, "-np", "2", "--oversubscribe", QFORGE, "compile", cfg]
    p = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def calibrating():
        text = open(log).read() if os.path.exists(log) else ""
        check("compiled '" not in text, "the compile finished before it could be stopped")
        return "calibration:" in text
    ranks = freeze_when([cfg], 2, calibrating, "calibrating", begun=log_grew(log))
    os.kill(p.pid, signal.SIGTERM)
    send(ranks, signal.SIGCONT)
    out = p.communicate(timeout=120)[0].decode()
    check(p.returncode != 0, f"a stopped compile exits 0:\n{out}")
    contains(out, "stopped by a signal before the compile finished", "keeps its previous set")
    check(not os.path.exists(os.path.join(work, "term", ".qforge.lock")), "the stopped run left its lock")
    out = run(["compile", cfg], ranks=2, timeout=300)
    check("taking over the lock" not in out, f"the next run took a stale lock over:\n{out}")


def test_small_things_users_saw(work):
    """A target's prefix suggests the target; a rank without rows says so; a trailing slash in
    out_dir prints no "//"; a truncated report.json is a data error; inspect says a tied table
    is one tensor."""
    import torch
    cfg = image_config()
    contains(run(["compile", cfg, "--set", "deployment_settings.target=onnx"], expect=3), "did you mean 'onnxruntime'")
    out = run(["compile", cfg, "--dry-run", "--set", "calibration_inputs.max_samples=2"], ranks=3)
    contains(out, "rank 2 on", "no rows")
    check("..-1" not in out, f"a rank without rows as a range:\n{out}")
    out = run(["compile", cfg, "--set", "out_dir=slash/", "--set", "calibration_inputs.max_samples=8"])
    check("//" not in out, f"a path printed with //:\n{out}")
    report = os.path.join(work, "slash", "report.json")
    text = open(report).read()
    with open(report, "w") as f:
        f.write(text[:len(text) // 2])
    contains(run(["report", os.path.join(work, "slash")], expect=4), "report.json is not a whole JSON report")

    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(50, 8)
            self.head = torch.nn.Linear(8, 50, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, ids):
            return self.head(self.embed(ids))
    model = os.path.join(work, "tied.pt")
    torch.jit.trace(Tied().eval(), torch.zeros(1, 4, dtype=torch.long)).save(model)
    out = run(["inspect", model])
    contains(out, "tied, counted once", "400")  # 50 x 8 parameters, once
    check("800" not in out, f"the tied table counted twice:\n{out}")

    # int32 pixels for a float model: the cast that fixes it; a data input named apart from the
    # model's argument: said, with both names.
    import numpy as np
    from qforge_h5 import write_samples
    net = os.path.join(work, "net.pt")
    torch.jit.trace(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval(), torch.randn(1, 12)).save(net)
    for name, dtype in (("int32", np.int32), ("pixels", np.float32)):
        data = os.path.join(work, f"{name}.h5")
        write_samples(data, "tensor", [name], {"all": {name: np.arange(96).reshape(8, 12).astype(dtype)}})
        cfg = write_config(f"{name}.yaml", f"""
model: {{path: {net}}}
out_dir: {name}
calibration_inputs: {{files: [{data}], batch_size: 4}}
deployment_settings: {{target: libtorch}}
quantization_settings: {{}}
""")
        if dtype == np.int32:
            contains(run(["compile", cfg], expect=5), "is Int", "data_transform: [{op: cast, dtype: float32, inputs: [int32]}]")
        else:
            contains(run(["compile", cfg]), "the data's input 'pixels' is passed as argument 0 'input'")


def test_compile_fine_tune_signal_checkpoints_and_resumes(work):
    # SIGUSR1 (what SLURM's --signal sends to the tasks) to one rank only,
    # mid-fine-tune: every rank stops at the same step, rank 0 checkpoints, the
    # command exits 75; then SIGUSR1 to mpirun does the same; run again, it
    # resumes and ends as a run never stopped.
    import signal
    import torch
    cfg = compile_config("sig.yaml", "tuple_model.pt", "text_tuple.h5", 5, "libtorch", """
compile_options:
  fine_tune: {enabled: true, steps: 1000, batch_size: 8, lora_rank: 4, learning_rate: 0.005, warmup_steps: 1,
              log_every: 1, lora_dropout: 0.1}
""")
    run(["compile", cfg, "--set", "out_dir=sig_whole"], ranks=2, timeout=300)
    cmd = [MPIEXEC, "-np", "2", "--oversubscribe", QFORGE, "compile", cfg, "--set", "out_dir=sig_parts"]
    p = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # Rank 0's log file has a line per step as it happens (the console's
    # output may reach mpirun later, in one piece).
    log = os.path.join(work, "sig_parts", "logs", "rank-0.log")
    ranks = freeze_mid_fine_tune([cfg, "out_dir=sig_parts"], log, ranks=2, steps=1000)
    os.kill(max(ranks), signal.SIGUSR1)
    send(ranks, signal.SIGCONT)
    out = p.communicate(timeout=120)[0].decode()
    check(p.returncode == 75, f"a signalled run exits 75, got {p.returncode}:\n{out}")
    contains(out, f"(signal {int(signal.SIGUSR1)})", "run again to resume")
    check(artifacts("sig_parts") == ["checkpoints", "logs"], f"a stopped run writes its checkpoint only: {artifacts('sig_parts')}")
    # The resumed run stopped again, by SIGUSR1 to mpirun (which forwards it to every
    # rank): exit 75 again, and no progress bar drawn into mpirun's output.
    p = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ranks = freeze_mid_fine_tune([cfg, "out_dir=sig_parts"], log, ranks=2, steps=1000, after=open(log).read().count(
        "fine-tune step ") + 5)
    os.kill(p.pid, signal.SIGUSR1)
    send(ranks, signal.SIGCONT)
    out = p.communicate(timeout=120)[0].decode()
    check(p.returncode == 75, f"SIGUSR1 to mpirun: exit 75, got {p.returncode}:\n{out}")
    contains(out, "resumed from", "run again to resume")
    check("fine-tune [" not in out, f"a progress bar under mpirun:\n{out[-2000:]}")
    out = run(["compile", cfg, "--set", "out_dir=sig_parts"], ranks=2, timeout=300)
    contains(out, "resumed from")
    whole = json.load(open(os.path.join(work, "sig_whole", "report.json")))["fine_tune"]
    parts = json.load(open(os.path.join(work, "sig_parts", "report.json")))["fine_tune"]
    check(whole["loss"] == parts["loss"], "the resumed run's losses differ from the uninterrupted run's")
    ids = torch.arange(24).reshape(2, 12) % 100
    mask = torch.ones_like(ids)
    y = [torch.jit.load(os.path.join(work, d, "model.qforge.pt"))(ids, mask) for d in ("sig_whole", "sig_parts")]
    check(torch.equal(y[0], y[1]), "resumed and uninterrupted models differ")


def test_submit_dry_run_renders_resources(work):
    # No SLURM needed: --dry-run prints the batch script and writes nothing.
    cfg = image_config(out="sub", extra="""
resources: {nodes: 2, gpus_per_node: 4, cpus_per_task: 8, memory: 64G, time: "02:00:00", partition: gpu, account: ml}
sweep: [quantization_settings.weights.bits=4, [quantization_settings.weights.bits=6, seed=1]]
""")
    out = run(["submit", cfg, "--dry-run", "--set", "seed=3"])
    contains(out, "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
             "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64G", "#SBATCH --time=02:00:00", "#SBATCH --partition=gpu",
             "#SBATCH --account=ml", f"#SBATCH --chdir={work}", "#SBATCH --array=0-1",
             f"#SBATCH --output={work}/sub/slurm-%A_%a.out", f"QFORGE={os.path.realpath(QFORGE)}",
             "srun --mpi=pmix", "--requeue", "--signal=USR1@120",
             f"# sbatch --parsable {work}/sub/submit.sbatch {cfg} --set seed=3")
    check(out.index("#SBATCH --job-name=qforge-resnet18_traced") < out.index("set -uo pipefail"),
          "the resources are #SBATCH lines before the script's first command")
    check(not os.path.exists(os.path.join(work, "sub")), "--dry-run writes nothing")
    # The same script by hand: slurm/compile.sbatch is what qforge submit renders.
    template = open(os.path.join(SOURCE, "slurm", "compile.sbatch")).read()
    contains(out, template[template.index("set -uo pipefail"):])
    # Each sweep task: its own settings, its own directory.
    out = run(["config", "show", cfg, "--set", "seed=3"])
    contains(out, "out_dir: sub\n")
    for task, bits, seed in ((0, 4, 3), (1, 6, 1)):
        out = run(["compile", cfg, "--set", "seed=3", "--sweep-task", str(task), "--dry-run"], ranks=1)
        resolved = json.load(open(os.path.join(work, "sub", f"sweep-{task}", "plan.json")))["config"]
        contains(resolved, f"\nseed: {seed}\n", f"weights: {{enabled: true, bits: {bits},", "\nsweep: []")
    out = run(["compile", cfg, "--sweep-task", "2"], expect=3)
    contains(out, "sweep task 2 does not exist", "tasks 0..1")
    out = run(["submit", cfg, "--dry-run", "--set", "resources.tasks_per_node=2"], expect=3)
    contains(out, "resources.tasks_per_node", "one rank per GPU")


def test_key_reference_is_the_schemas():
    """docs/keys.md is what jobs/make_key_reference.sh writes from the schema, to the character."""
    with open(os.path.join(SOURCE, "docs", "keys.md")) as f:
        page = f.read()
    table = run(["config", "keys", "--markdown"])
    check(page.endswith(table), "docs/keys.md and the schema part: run `bash jobs/make_key_reference.sh`")
    for line in run(["config", "keys"]).splitlines():
        key = line.split()[0]
        check(f"`{key}`" in page, f"docs/keys.md does not document the key {key}")
