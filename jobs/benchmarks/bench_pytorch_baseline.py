"""What a user would otherwise write: the same calibration and QA-LoRA
fine-tuning as jobs/benchmarks/bench_calibration.sh and jobs/benchmarks/bench_finetune.sh, in plain
PyTorch on the same model, data, batch and steps: PyTorch's MinMaxObserver on
every quantized layer's input (min/max all-reduced over ranks; one pass, the
work of qforge's range pass), LoRA adapters trained through PyTorch's
fake-quantization ops (torch.fake_quantize_per_channel_affine /
_per_tensor_affine) under DistributedDataParallel with the float model as
teacher (MSE), and plain LoRA from the `peft` package (own adapters where peft
is not installed). Both sides start cold (no warm-up outside the timers); a
step's time is the median over steps 4 to STEPS, as qforge's table reads it.
Usage: python -m torch.distributed.run --nproc_per_node N bench_pytorch_baseline.py WORK MODEL SIZE BATCH FT_BATCH STEPS
(FT_BATCH: the global batch.) AUTOCAST=bf16 or fp16 in the environment runs the forward passes
under torch.autocast, as qforge's `autocast` setting does; MATMUL_PRECISION=high sets
torch.set_float32_matmul_precision("high") (TF32), as qforge's `matmul_precision`. Prints one
JSON line on rank 0 (slowest rank's seconds)."""
import copy
import json
import os
import statistics
import sys
import time

import h5py
import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from bench_assets import make_model  # noqa: E402

LORA_RANK, LORA_ALPHA = 8, 16.0
WARMUP_STEPS = 3  # left out of the step time, as in jobs/benchmarks/bench_row.py
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(os.environ.get("AUTOCAST", ""))
MATMUL_PRECISION = os.environ.get("MATMUL_PRECISION", "highest")


def autocast():
    return torch.autocast("cuda", dtype=AUTOCAST, enabled=AUTOCAST is not None)


def quantized_layers(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]


def load_rows(path, rank, world):
    with h5py.File(path) as f:
        group = next(iter(f["samples"].values()))
        data = group[next(iter(group.keys()))]
        rows = len(data)
        per = rows // world
        return torch.from_numpy(data[rank * per:(rank + 1) * per]), rows


def slowest(seconds):
    t = torch.tensor([seconds], device="cuda", dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


def calibrate(model, rows, batch):
    observers = {}
    hooks = []
    for name, m in quantized_layers(model):
        observers[name] = torch.ao.quantization.MinMaxObserver(dtype=torch.quint8).cuda()
        hooks.append(m.register_forward_pre_hook(lambda mod, args, o=observers[name]: o(args[0])))
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad(), autocast():
        for i in range(0, len(rows), batch):
            model(rows[i:i + batch].cuda(non_blocking=True))
    for o in observers.values():  # the ranks' statistics combined, as qforge does
        dist.all_reduce(o.min_val, op=dist.ReduceOp.MIN)
        dist.all_reduce(o.max_val, op=dist.ReduceOp.MAX)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    for h in hooks:
        h.remove()
    return seconds, observers


class LoraLayer(torch.nn.Module):
    """W + s·B·A, 4-bit per channel fake quantization of it and 8-bit of the input (quantize=True)."""

    def __init__(self, base, observer, quantize):
        super().__init__()
        self.base, self.quantize = base, quantize
        w = base.weight.detach()
        rows = w.reshape(w.size(0), -1)
        inputs = rows.size(1)
        self.a = torch.nn.Parameter(torch.randn(LORA_RANK, inputs, device=w.device) / inputs ** 0.5)
        self.b = torch.nn.Parameter(torch.zeros(w.size(0), LORA_RANK, device=w.device))
        self.register_buffer("w_scale", (rows.abs().amax(1) / 7).clamp_min(1e-8))
        self.register_buffer("w_zero", torch.zeros(w.size(0), dtype=torch.int32, device=w.device))
        scale, zero = observer.calculate_qparams()
        self.register_buffer("x_scale", scale.float().cuda())
        self.register_buffer("x_zero", zero.int().cuda())

    def forward(self, x):
        w = self.base.weight + (self.b @ self.a).view_as(self.base.weight) * (LORA_ALPHA / LORA_RANK)
        if self.quantize:
            w = torch.fake_quantize_per_channel_affine(w, self.w_scale, self.w_zero, 0, -8, 7)
            x = torch.fake_quantize_per_tensor_affine(x, self.x_scale, self.x_zero, 0, 255)
        if isinstance(self.base, torch.nn.Linear):
            return F.linear(x, w, self.base.bias)
        c = self.base
        return F.conv2d(x, w, c.bias, c.stride, c.padding, c.dilation, c.groups)


def fine_tune(model, student, rows, batch, steps):
    teacher = model
    params = [p for p in student.parameters() if p.requires_grad]
    ddp = torch.nn.parallel.DistributedDataParallel(student, device_ids=[torch.cuda.current_device()])
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    torch.cuda.synchronize()
    times = []
    for step in range(steps):
        start = time.perf_counter()
        first = (step * batch) % max(1, len(rows) - batch)
        x = rows[first:first + batch].cuda(non_blocking=True)
        with torch.no_grad(), autocast():
            expected = teacher(x)
        with autocast():
            loss = F.mse_loss(ddp(x), expected)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()  # qforge reads each step's loss: the same synchronization
        times.append(time.perf_counter() - start)
    return statistics.median(times[WARMUP_STEPS:] or times)


def with_lora_layers(model, observers, quantize):
    student = copy.deepcopy(model)
    for name, _ in quantized_layers(model):
        parent_name, _, child = name.rpartition(".")
        parent = student.get_submodule(parent_name) if parent_name else student
        setattr(parent, child, LoraLayer(getattr(parent, child), observers[name], quantize))
    for n, p in student.named_parameters():
        p.requires_grad_(n.endswith(".a") or n.endswith(".b"))
    return student


def lora_student(model, observers):
    """Plain LoRA as users add it: peft on every Linear/Conv2d (own adapters without peft)."""
    try:
        import peft
    except ImportError:
        return with_lora_layers(model, observers, False), "own adapters"
    config = peft.LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=0.0,
                             target_modules=[name for name, _ in quantized_layers(model)])
    return peft.get_peft_model(copy.deepcopy(model), config), f"peft {peft.__version__}"


def main(work, name, size, batch, ft_batch, steps):
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    torch.set_float32_matmul_precision(MATMUL_PRECISION)
    model = make_model(name, size).cuda()
    for p in model.parameters():
        p.requires_grad_(False)
    rows, total = load_rows(os.path.join(work, f"{name}_calibration.h5"), rank, world)
    rows = rows.pin_memory()
    cal_seconds, observers = calibrate(model, rows, batch)  # cold, as qforge's calibration phase
    result = {"model": name, "ranks": world, "autocast": os.environ.get("AUTOCAST", "off"),
              "matmul_precision": MATMUL_PRECISION, "calibration_rows": total,
              "fine_tune_global_batch": ft_batch, "calibration_s": slowest(cal_seconds)}
    student, lora_from = lora_student(model, observers)
    result["lora_from"] = lora_from
    result["lora_step_s"] = slowest(fine_tune(model, student, rows, ft_batch // world, steps))
    result["qa_lora_step_s"] = slowest(fine_tune(model, with_lora_layers(model, observers, True), rows, ft_batch // world, steps))
    if rank == 0:
        print(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], int(a[2]), int(a[3]), int(a[4]), int(a[5]))
