"""GPU tests: `qforge compile` on CUDA devices, one GPU per rank, NCCL between them.
Each test_* function is a ctest case (gpu_<case>); it is skipped where the GPUs it needs are missing."""
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import qforge_testing as qt  # noqa: E402
from qforge_testing import ASSETS, check, compile_config, contains, run, write_config  # noqa: E402


@pytest.fixture(autouse=True)
def work():
    with qt.work_dir("qforge-gpu-") as path:
        yield path


def gpus():
    """GPUs this qforge can use (0 when its LibTorch has no CUDA)."""
    if "CUDA available" not in run(["--version"]):
        return 0
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines())


def need(count):
    have = gpus()
    if have < count:
        pytest.skip(f"needs {count} GPU(s), this machine has {have}")


def quant_params(out):
    return json.load(open(os.path.join(qt.WORK, out, "quant_params.json")))


def scales(params):
    """layer -> every scale it holds (weights and activations), flattened."""
    out = {}
    for layer in params["layers"]:
        values = []
        for kind in ("weights", "activations"):
            q = layer.get(kind) or {}
            s = q.get("scale")
            if s is not None:
                values += s if isinstance(s, list) else [s]
        out[layer["name"]] = values
    return out


def max_relative_difference(a, b):
    check(a.keys() == b.keys(), "the same layers are quantized")
    worst = 0.0
    for name in a:
        check(len(a[name]) == len(b[name]), f"{name}: as many scales")
        for x, y in zip(a[name], b[name]):
            worst = max(worst, abs(x - y) / max(abs(x), abs(y), 1e-30))
    return worst


RESNET_OBSERVERS = """
layer_quantization_settings:
  'layer1.*': {activations: {observer: percentile, percentile: 99.9}}
  'layer2.*': {activations: {observer: entropy, symmetric: true, signed: true}}
  'layer3.*': {activations: {observer: mse}, weights: {observer: mse, granularity: group, group_size: 32}}
"""


def test_quant_params_agree_on_1_and_more_gpus():
    # Calibration statistics reduced over NCCL: the parameters do not depend
    # on how many GPUs share the data.
    need(2)
    cfg = compile_config("gpu_inv.yaml", "resnet18_traced.pt", "images.h5", 4, "libtorch",
                         "device: cuda\n" + RESNET_OBSERVERS)
    counts = [1, 2] + ([4] if gpus() >= 4 else [])
    params = {}
    for n in counts:
        out = run(["compile", cfg, "--set", f"out_dir=gpu_inv{n}"], ranks=n, timeout=300)
        contains(out, "computes on cuda:0", "collectives over nccl" if n > 1 else "")
        params[n] = quant_params(f"gpu_inv{n}")
    for n in counts[1:]:
        worst = max_relative_difference(scales(params[1]), scales(params[n]))
        print(f"1 GPU vs {n} GPUs: largest relative scale difference {worst:.3g}")
        check(worst <= 1e-5, f"scales on {n} GPUs differ from 1 GPU by {worst} (relative), tolerance 1e-5")


def test_cpu_and_gpu_compiles_agree(work):
    # The same experiment on the CPU and on a GPU: scales within 5%, compiled
    # models within 5% of each other's outputs (3.0% measured on an H100), and
    # the GPU's artifact loads and runs on a CPU. cuDNN convolutions sum in TF32 and in another order, and a
    # percentile, entropy or MSE threshold is a choice among histogram bins: a
    # small change of the activations can move it by a bin (2% seen on an H100).
    need(1)
    import h5py
    import torch
    cfg = compile_config("gpu_vs_cpu.yaml", "resnet18_traced.pt", "images.h5", 4, "libtorch", RESNET_OBSERVERS)
    run(["compile", cfg, "--set", "out_dir=on_cpu", "--set", "device=cpu"], timeout=300)
    run(["compile", cfg, "--set", "out_dir=on_gpu", "--set", "device=cuda"], timeout=300)
    worst = max_relative_difference(scales(quant_params("on_cpu")), scales(quant_params("on_gpu")))
    print(f"CPU vs GPU: largest relative scale difference {worst:.3g}")
    check(worst <= 5e-2, f"CPU and GPU scales differ by {worst} (relative), tolerance 5e-2")
    models = {d: torch.jit.load(os.path.join(work, d, "model.qforge.pt")) for d in ("on_cpu", "on_gpu")}
    for name, t in list(models["on_gpu"].named_parameters()) + list(models["on_gpu"].named_buffers()):
        check(t.device.type == "cpu", f"the GPU-compiled artifact holds {name} on {t.device}")
    with h5py.File(os.path.join(ASSETS, "images.h5")) as f:
        x = torch.from_numpy(f["samples/s32/x"][:16])
    with torch.no_grad():
        a, b = models["on_cpu"](x), models["on_gpu"](x)
    error = ((a - b).norm() / a.norm()).item()
    print(f"CPU vs GPU compiled outputs: relative difference {error:.3g}")
    check(error <= 0.05, f"CPU- and GPU-compiled models differ by {error} (relative L2), tolerance 0.05")
    for d in ("on_cpu", "on_gpu"):
        ev = json.load(open(os.path.join(work, d, "report.json")))["evaluation"]
        print(d, "agreement with float", ev.get("top1_agreement"))


def test_a_model_traced_on_the_cpu_compiles_on_the_gpu(work):
    # tests/models/hf_like.py's decoder, traced on the CPU as transformers models are: its graph
    # holds position tables and `device=cpu` as constants, and its output layer is tied. On the
    # GPU both must follow the model: it compiles (W8A8 and 4-bit GPTQ), the head is still found
    # tied, the artifact comes back to the CPU and computes there what the GPU computed.
    need(1)
    import numpy as np
    import torch
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
    from qforge_h5 import write_samples
    rng = np.random.default_rng(0)
    write_samples(os.path.join(work, "ids.h5"), "tensor", ["input_ids"],
                  {"len6": {"input_ids": rng.integers(1, 100, (24, 6))}, "len12": {"input_ids": rng.integers(1, 100, (8, 12))}})
    for name, quantization in (("w8a8", "{}"), ("gptq", "{weights: {algorithm: gptq, bits: 4, granularity: group, group_size: 32}}")):
        cfg = write_config(f"{name}.yaml", f"""
model: {{path: {ASSETS}/hf_llama_traced.pt}}
out_dir: {name}
device: cuda
calibration_inputs: {{files: [{work}/ids.h5], batch_size: 8}}
evaluation_inputs: {{files: [{work}/ids.h5], batch_size: 8}}
deployment_settings: {{target: libtorch}}
quantization_settings: {quantization}
""")
        run(["compile", cfg], timeout=300)
        report = json.load(open(os.path.join(work, name, "report.json")))
        tied = [l["name"] for l in report["layers"] if l["decision"] == "tied"]
        check(tied == ["model.lm_head"], f"{name}: tied layers on the GPU: {tied}")
        print(f"{name} on the GPU: output SQNR against float {report['evaluation']['output_sqnr_db']:.1f} dB")
        model = torch.jit.load(os.path.join(work, name, "model.qforge.pt"))
        ids = torch.from_numpy(rng.integers(1, 100, (3, 9)))
        with torch.no_grad():
            on_cpu = model(ids)
            on_gpu = model.cuda()(ids.cuda()).cpu()
        error = ((on_cpu - on_gpu).norm() / on_cpu.norm()).item()
        check(error < 1e-2, f"{name}: the artifact computes differently on the CPU and the GPU ({error})")


def fine_tune_config(extra=""):
    return compile_config("gpu_ft.yaml", "tuple_model.pt", "text_tuple.h5", 5, "libtorch", """
device: cuda
compile_options:
  fine_tune: {enabled: true, steps: 8, batch_size: 8, lora_rank: 4, learning_rate: 0.005, warmup_steps: 1}
""" + extra)


def test_qa_lora_on_2_gpus_matches_1_gpu(work):
    # Data-parallel QA-LoRA: the same global batch on 1 and 2 GPUs gives the
    # same losses and the same compiled model within float tolerance.
    need(2)
    import torch
    cfg = fine_tune_config()
    for n in (1, 2):
        run(["compile", cfg, "--set", f"out_dir=gpu_ft{n}"], ranks=n, timeout=300)
    loss = {n: json.load(open(os.path.join(work, f"gpu_ft{n}", "report.json")))["fine_tune"]["loss"] for n in (1, 2)}
    print("losses, 1 GPU:", loss[1], "\nlosses, 2 GPUs:", loss[2])
    check(len(loss[1]) == len(loss[2]) == 8, "every step reports its loss")
    for a, b in zip(loss[1], loss[2]):
        check(abs(a - b) <= 1e-3 * abs(a) + 1e-6, f"losses differ between 1 and 2 GPUs: {loss[1]} vs {loss[2]}")
    ids = torch.arange(24).reshape(2, 12) % 100
    mask = torch.ones_like(ids)
    y = [torch.jit.load(os.path.join(work, f"gpu_ft{n}", "model.qforge.pt"))(ids, mask) for n in (1, 2)]
    check(torch.allclose(y[0], y[1], rtol=1e-3, atol=1e-4), f"1- and 2-GPU models differ: {(y[0] - y[1]).abs().max()}")


def test_autocast_bf16_calibrates_and_fine_tunes(work):
    # Mixed precision: calibration and fine-tuning in bfloat16 autocast finish
    # and the compiled model still tracks the float one on held-out data.
    need(1)
    out = run(["compile", fine_tune_config(), "--set", "out_dir=gpu_bf16", "--set", "autocast=bf16"], timeout=300)
    contains(out, "autocast bf16")
    report = json.load(open(os.path.join(work, "gpu_bf16", "report.json")))
    losses = report["fine_tune"]["loss"]
    check(all(l == l and l < 1e3 for l in losses), f"finite losses under autocast: {losses}")
    check(report["evaluation"]["top1_agreement"] >= 0.8, f"agreement under autocast: {report['evaluation']}")


def test_tf32_matmuls_fine_tune_and_change_the_arithmetic(work):
    # matmul_precision: high reaches the GPU's matrix products (the losses
    # differ from IEEE float32's in their low bits) and the compiled model still
    # tracks the float one on held-out data.
    need(1)
    losses = {}
    for precision in ("highest", "high"):
        out = run(["compile", fine_tune_config(), "--set", f"out_dir=gpu_{precision}", "--set",
                   f"matmul_precision={precision}"], timeout=300)
        check(("in TF32" in out) == (precision == "high"), f"the log names TF32 only when asked: {precision}")
        report = json.load(open(os.path.join(work, f"gpu_{precision}", "report.json")))
        losses[precision] = report["fine_tune"]["loss"]
        check(all(l == l and l < 1e3 for l in losses[precision]), f"finite losses: {losses[precision]}")
        check(report["evaluation"]["top1_agreement"] >= 0.8, f"agreement: {report['evaluation']}")
    check(losses["high"] != losses["highest"], "TF32 gave the float32 losses bit for bit: not applied")


def test_teacher_autocast_rounds_the_teacher_and_nothing_else(work):
    # teacher_autocast: bf16 runs the float teacher's forward in bfloat16: the
    # losses move (it is applied) but only by the teacher's rounding, and the
    # compiled model still tracks the float one. The first step's loss comes
    # before any update; this small model's quantized student is so close to
    # its teacher (a loss near 6e-6) that bf16's rounding of the teacher's
    # outputs moves it by about 15%.
    need(1)
    losses = {}
    for mode in ("off", "bf16"):
        run(["compile", fine_tune_config(), "--set", f"out_dir=teacher_{mode}", "--set",
             f"compile_options.fine_tune.teacher_autocast={mode}"], timeout=300)
        report = json.load(open(os.path.join(work, f"teacher_{mode}", "report.json")))
        losses[mode] = report["fine_tune"]["loss"]
        check(all(l == l and l < 1e3 for l in losses[mode]), f"finite losses: {losses[mode]}")
        check(report["evaluation"]["top1_agreement"] >= 0.8, f"agreement: {report['evaluation']}")
    print(f"losses: {losses}")
    check(losses["bf16"] != losses["off"], "the bf16 teacher gave the float32 losses bit for bit: not applied")
    first = abs(losses["bf16"][0] - losses["off"][0]) / abs(losses["off"][0])
    check(first < 0.3, f"the first step's loss moved by {first:.1%}: more than the teacher's rounding")


CUDA_GRAPH_CASES = {
    # Two sequence lengths and accumulation (several input shapes), learned
    # ranges, LoRA dropout, and data seen 3 times (the teacher's kept outputs
    # copied into a graph's).
    "text": ("tuple_model.pt", "text_tuple.h5", 8, """
  fine_tune: {enabled: true, steps: 10, batch_size: 8, accumulation_steps: 2, lora_rank: 4, learning_rate: 0.005,
              warmup_steps: 1, learn_ranges: true, lora_dropout: 0.1}
"""),
    # Convolutions (cuDNN) and a task loss on the file's labels.
    "images": ("resnet18_traced.pt", "images.h5", 8, """
  fine_tune: {enabled: true, steps: 6, batch_size: 8, lora_rank: 4, task_loss_weight: 0.5, warmup_steps: 1}
"""),
    # A decoder in TorchScript (attention, causal masks, KL distillation).
    "decoder": ("llama_decoder_scripted.pt", "tokens.h5", 4, """
  fine_tune: {enabled: true, steps: 6, batch_size: 4, lora_rank: 4, distillation: kl, warmup_steps: 1}
"""),
}


def test_cuda_graphs_replay_what_eager_steps_compute(work):
    # Micro-batches replayed from CUDA graphs compute the eager steps' numbers:
    # the same losses and quantization parameters, bit for bit, on models of
    # three kinds.
    need(1)
    for case, (model, data, batch, tune) in CUDA_GRAPH_CASES.items():
        cfg = compile_config(f"graphs_{case}.yaml", model, data, batch, "libtorch",
                             "device: cuda\ncompile_options:\n" + tune)
        reports = {}
        for graphs in ("true", "false"):
            out = run(["compile", cfg, "--set", f"out_dir={case}_{graphs}", "--set",
                       f"compile_options.fine_tune.cuda_graphs={graphs}"], timeout=300)
            check("CUDA graphs are off" not in out, f"{case}: a capture failed:\n{out}")
            reports[graphs] = json.load(open(os.path.join(work, f"{case}_{graphs}", "report.json")))
        replays = {g: r["fine_tune"]["graph_replays"] for g, r in reports.items()}
        losses = {g: r["fine_tune"]["loss"] for g, r in reports.items()}
        print(f"{case}: replayed {replays}, losses {losses}")
        check(replays["true"] > 0 and replays["false"] == 0, f"{case}: replays {replays}")
        check(losses["true"] == losses["false"], f"{case}: graphs changed the losses: {losses}")
        check(quant_params(f"{case}_true") == quant_params(f"{case}_false"),
              f"{case}: graphs changed quant_params.json")


def test_cuda_graphs_step_aside_for_a_forward_that_reads_back_to_the_host(work):
    # A forward that reads a value back to the host cannot be captured: the
    # run warns, goes on eagerly and computes what a run without graphs does.
    # One model reads back in every forward (the teacher's capture fails), the
    # other only while gradients are on (the student's capture fails).
    need(1)
    import torch

    class ReadsBack(torch.nn.Module):
        def __init__(self, always: bool):
            super().__init__()
            self.always = always
            self.fc1 = torch.nn.Linear(8, 16)
            self.fc2 = torch.nn.Linear(16, 4)

        def forward(self, x):
            h = torch.relu(self.fc1(x))
            if self.always or torch.is_grad_enabled():
                if bool(h.sum() > 0):  # the host waits for the GPU's answer
                    h = h * 2.0
            return self.fc2(h)

    for who, always in (("teacher", True), ("student", False)):
        torch.manual_seed(0)
        path = os.path.join(work, f"reads_back_{who}.pt")
        torch.jit.script(ReadsBack(always).eval()).save(path)
        cfg = write_config(f"reads_back_{who}.yaml", f"""
model: {{path: {path}}}
calibration_inputs: {{files: [{ASSETS}/vectors.h5], batch_size: 4}}
deployment_settings: {{target: libtorch}}
device: cuda
quantization_settings: {{}}
compile_options:
  fine_tune: {{enabled: true, steps: 6, batch_size: 4, lora_rank: 2, warmup_steps: 1}}
""")
        losses = {}
        for graphs in ("true", "false"):
            out = run(["compile", cfg, "--set", f"out_dir={who}_{graphs}", "--set",
                       f"compile_options.fine_tune.cuda_graphs={graphs}"], timeout=300)
            if graphs == "true":
                contains(out, "CUDA graphs are off", f"the {who}'s")
            report = json.load(open(os.path.join(work, f"{who}_{graphs}", "report.json")))
            check(report["fine_tune"]["graph_replays"] == 0, f"{who}: replays after a failed capture")
            losses[graphs] = report["fine_tune"]["loss"]
        check(losses["true"] == losses["false"], f"{who}: the failed capture changed the losses: {losses}")


def test_gptq_keeps_block_inputs_on_the_gpu_or_in_pinned_memory(work):
    # Sequential GPTQ on a GPU: each block's inputs kept on the GPU, or in pinned
    # host memory, give the same weights bit for bit. Two sequence lengths, so
    # the kept inputs differ in shape from batch to batch.
    need(1)
    import torch
    cfg = write_config("gpu_gptq.yaml", f"""
model: {{path: {ASSETS}/llama_decoder_scripted.pt}}
calibration_inputs: {{files: [{ASSETS}/tokens.h5], batch_size: 4}}
deployment_settings: {{target: libtorch}}
device: cuda
quantization_settings:
  weights: {{bits: 4, granularity: group, group_size: 16, algorithm: gptq}}
  activations: {{enabled: false}}
layer_quantization_settings: {{embed: {{skip: true}}}}
""")
    weights = {}
    for offload in ("none", "cpu"):
        out = run(["compile", cfg, "--set", f"out_dir={offload}", "--set",
                   f"quantization_settings.weights.gptq.offload={offload}"], timeout=300)
        contains(out, "gptq layers.2: block inputs kept", "pinned host memory" if offload == "cpu" else "GPU memory")
        weights[offload] = torch.jit.load(os.path.join(work, offload, "model.qforge.pt")).state_dict()
        check(scales(quant_params(offload)), "quant_params.json holds the weights' scales")
    for name, value in weights["none"].items():
        check(torch.equal(weights["cpu"][name], value), f"{name}: offload cpu differs from offload none")
    check(scales(quant_params("cpu")) == scales(quant_params("none")), "the scales depend on where inputs are kept")
    phases = json.load(open(os.path.join(work, "none", "report.json")))["phases"]
    peak = max(max(p["peak_bytes_per_rank"]) for p in phases)
    print(f"peak GPU memory {peak / 2**20:.1f} MiB")
    check(peak > 0, "report.json gives the GPU's peak memory")
