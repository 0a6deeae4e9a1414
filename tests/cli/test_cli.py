"""Command-line tests: the qforge binary as a user runs it, alone and under mpirun.
Usage: test_cli.py CASE (the cases are the functions below named case_*)."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

QFORGE = os.environ["QFORGE_BIN"]
ASSETS = os.environ["QFORGE_TEST_ASSETS"]
SOURCE = os.environ["QFORGE_SOURCE_DIR"]
MPIEXEC = os.environ.get("MPIEXEC", "mpirun")
WORK = tempfile.mkdtemp(prefix="qforge-cli-")


def run(args, ranks=0, expect=0, timeout=90):
    cmd = ([MPIEXEC, "-np", str(ranks), "--oversubscribe"] if ranks else []) + [QFORGE] + args
    p = subprocess.run(cmd, cwd=WORK, capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    if expect is not None and p.returncode != expect:
        raise AssertionError(f"{' '.join(cmd)}: exit {p.returncode}, expected {expect}\n{out}")
    return out


def check(cond, message):
    if not cond:
        raise AssertionError(message)


def contains(out, *fragments):
    for f in fragments:
        check(f in out, f"'{f}' not in output:\n{out}")


def write_config(name, text):
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def image_config(extra="", out="out"):
    return write_config("exp.yaml", f"""
model: {{path: {ASSETS}/resnet18_traced.pt}}
out_dir: {out}
calibration_inputs: {{files: [{ASSETS}/images.h5], batch_size: 4}}
tracing_inputs: {{batch_sizes: [1, 2]}}
deployment_settings: {{target: tensorrt}}
quantization_settings: {{weights: {{bits: 8}}}}
layer_quantization_settings: {{'layer4.*': {{skip: true}}, fc: {{weights: {{bits: 4}}}}}}
""" + extra)


def dry_run_resnet(ranks):
    out = run(["compile", image_config(), "--dry-run"], ranks=ranks)
    plan = json.load(open(os.path.join(WORK, "out", "plan.json")))
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
        check(os.path.exists(os.path.join(WORK, "out", "logs", f"rank-{r}.log")), f"log of rank {r}")


def case_help_and_version():
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


def case_inspect_torchvision_models():
    out = run(["inspect", f"{ASSETS}/resnet18_traced.pt"])
    contains(out, "forward(x: Tensor) -> Tensor", "layer4.1.conv2", "21 quantizable", "no: normalization")
    data = json.loads(run(["inspect", f"{ASSETS}/mobilenet_v2_scripted.pt", "--json"]))
    check(sum(l["quantizable"] for l in data["layers"]) == 53, "mobilenet_v2 quantizable layers")
    check(data["inputs"][0]["name"] == "x", "method inputs")


def case_dry_run_resnet18_1_rank():
    dry_run_resnet(0)  # no launcher at all


def case_dry_run_resnet18_2_ranks():
    dry_run_resnet(2)


def case_dry_run_resnet18_3_ranks():
    dry_run_resnet(3)


def case_dry_run_tuple_inputs():
    cfg = write_config("t.yaml", f"""
model: {{path: {ASSETS}/tuple_model.pt}}
out_dir: out_t
calibration_inputs: {{files: [{ASSETS}/text_tuple.h5], batch_size: 5}}
""")
    out = run(["compile", cfg, "--dry-run"], ranks=2)
    contains(out, "tuple samples (ids, mask)", "input 'ids'", "dynamic axes [1]")


def case_dry_run_dict_inputs():
    cfg = write_config("d.yaml", f"""
model: {{path: {ASSETS}/dict_model.pt}}
out_dir: out_d
calibration_inputs: {{files: [{ASSETS}/text_dict.h5], batch_size: 5}}
tracing_inputs: {{batch_sizes: [1, 3]}}
""")
    out = run(["compile", cfg, "--dry-run"], ranks=3)
    contains(out, "dict samples (input_ids, attention_mask)", "forward(batch: Dict(str, Tensor))",
             "dynamic axes [0, 1]")


def case_dry_run_static_kwargs():
    cfg = write_config("k.yaml", f"""
model: {{path: {ASSETS}/kwargs_model.pt}}
out_dir: out_k
calibration_inputs: {{files: [{ASSETS}/vectors.h5]}}
forward: {{kwargs: {{scale: 0.5, use_relu: true}}}}
""")
    run(["compile", cfg, "--dry-run"])
    out = run(["compile", cfg, "--dry-run", "--set", "forward.kwargs.scale=abc"], expect=5)
    contains(out, "forward.kwargs.scale", "'abc'")


def case_dry_run_writes_only_plan_and_logs():
    run(["compile", image_config(out="only"), "--dry-run"], ranks=2)
    files = sorted(os.path.relpath(os.path.join(d, f), os.path.join(WORK, "only"))
                   for d, _, fs in os.walk(os.path.join(WORK, "only")) for f in fs)
    check(files == ["logs/rank-0.log", "logs/rank-1.log", "plan.json"], f"dry run wrote {files}")


def case_config_show_and_set():
    out = run(["config", "show", image_config(), "--set", "calibration_inputs.batch_size=16",
               "--set", "layer_quantization_settings[layer1.0.conv1].skip=true"])
    contains(out, "batch_size: 16", "layer1.0.conv1:", "discard_input_model: true")
    keys = run(["config", "keys"])
    contains(keys, "quantization_settings.weights.granularity", "resources.gpus_per_node")


def case_error_unknown_yaml_key():
    cfg = image_config(extra="calibraton_inputs: {}\n")
    out = run(["compile", cfg, "--dry-run"], ranks=2, expect=3)
    contains(out, "exp.yaml", "unknown key 'calibraton_inputs'", "did you mean 'calibration_inputs'")
    check(out.count("unknown key") == 1, "the error is printed once, not once per rank")


def case_error_wrong_yaml_type():
    out = run(["compile", image_config(), "--dry-run", "--set", "quantization_settings.weights.bits=[4]"], expect=3)
    contains(out, "quantization_settings.weights.bits", "expected an integer")


def case_error_truncated_hdf5_3_ranks():
    out = run(["compile", image_config(), "--dry-run", "--set", f"calibration_inputs.files=[{ASSETS}/truncated.h5]"],
              ranks=3, expect=4, timeout=60)
    contains(out, "truncated.h5", "truncated")


def case_error_model_data_mismatch_2_ranks():
    out = run(["compile", image_config(), "--dry-run", "--set", f"model.path={ASSETS}/tuple_model.pt"],
              ranks=2, expect=5, timeout=60)
    contains(out, "tuple_model.pt", "forward(ids: Tensor, mask: Tensor)", "'mask' has no default")


def case_error_nan_on_one_rank():
    # nan.h5 has a NaN in row 7: only the last of 2 ranks (rows 5..9) sees it.
    cfg = write_config("nan.yaml", f"""
model: {{path: {ASSETS}/resnet18_traced.pt}}
out_dir: out_nan
calibration_inputs: {{files: [{ASSETS}/nan.h5], batch_size: 2}}
""")
    out = run(["compile", cfg, "--dry-run"], ranks=2, expect=4, timeout=60)
    contains(out, "nan.h5:/samples/s32/x", "row 7", "rank 1")


def case_error_missing_model():
    out = run(["compile", image_config(), "--dry-run", "--set", "model.path=nowhere.pt"], ranks=2, expect=5)
    contains(out, "nowhere.pt", "no such model file")


def case_error_not_a_model():
    out = run(["inspect", f"{ASSETS}/not_a_model.pt"], expect=5)
    contains(out, "not_a_model.pt", "TorchScript")


def case_error_layer_glob_matches_nothing():
    out = run(["compile", image_config(), "--dry-run", "--set", "layer_quantization_settings[layer9.*].skip=true"],
              expect=3)
    contains(out, "layer_quantization_settings[layer9.*]", "matches no layer", "closest layer names")


def case_error_cuda_without_gpu():
    has_gpu = "CUDA available" in run(["--version"])
    out = run(["compile", image_config(), "--dry-run", "--set", "device=cuda"], expect=0 if has_gpu else 3)
    contains(out, "plan written to" if has_gpu else "no CUDA device")


def case_error_quantization_without_target():
    out = run(["compile", image_config(), "--dry-run", "--set", "deployment_settings=null"], expect=3)
    contains(out, "deployment_settings.target")


def case_readme_documents_every_key():
    readme = open(os.path.join(SOURCE, "README.md")).read()
    for line in run(["config", "keys"]).splitlines():
        key = line.split()[0]
        check(f"`{key}`" in readme, f"README does not document the key {key}")


if __name__ == "__main__":
    try:
        globals()["case_" + sys.argv[1]]()
        print(f"{sys.argv[1]}: ok")
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
