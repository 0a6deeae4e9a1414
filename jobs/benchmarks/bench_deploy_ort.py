"""Time one ONNX model in ONNX Runtime (Python, CPU provider): the twin of
jobs/benchmarks/bench_deploy_ort.js, same command line and same JSON line.
    bench_deploy_ort.py MODEL.onnx [--batch B] [--runs N] [--warmup W] [--threads T]
                        [--dims NAME=V[,NAME=V...]] [--input-shape [INPUT=]D0xD1x...]
                        [--int-range LO:HI] [--seed S]
Inputs are random, of each input's dtype and shape as the session reports them: axis 0 of
every input is the batch and gets B (an error when the model fixes it to another size); any
other symbolic axis needs --dims, keyed by the axis' name, by INPUT:AXIS, or `*` for every
remaining one. --input-shape gives an input's whole shape instead (its axis 0 must be B;
INPUT= may be left out when the model has one input). Integer inputs are drawn from
[LO, HI) (default 0:2, safe for masks and any embedding table; give the vocabulary for
token ids), floats from a standard normal. One session (intra-op threads T, inter-op 1,
sequential, all graph optimizations), W untimed runs, then N timed runs of session.run on
the same inputs. Usage errors exit 2, ONNX Runtime errors 1. Prints one JSON line:
median_ms, p90_ms, runs, batch, threads, ort_version, and runner, model, warmup, min_ms,
mean_ms, times_ms, inputs."""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import onnxruntime as ort

DTYPES = {  # ONNX Runtime's type string -> (the name both runners print, NumPy dtype)
    "tensor(float)": ("float32", np.float32), "tensor(float16)": ("float16", np.float16),
    "tensor(double)": ("float64", np.float64), "tensor(int8)": ("int8", np.int8),
    "tensor(uint8)": ("uint8", np.uint8), "tensor(int16)": ("int16", np.int16),
    "tensor(uint16)": ("uint16", np.uint16), "tensor(int32)": ("int32", np.int32),
    "tensor(uint32)": ("uint32", np.uint32), "tensor(int64)": ("int64", np.int64),
    "tensor(uint64)": ("uint64", np.uint64), "tensor(bool)": ("bool", np.bool_),
}


def fail(message):
    print(f"bench_deploy_ort.py: {message}", file=sys.stderr)
    sys.exit(2)


def parse_dims(items):
    dims = {}
    for item in items:
        for part in filter(None, item.split(",")):
            key, sep, value = part.rpartition("=")
            if not sep or not key or not value.isdigit() or int(value) < 1:
                fail(f"--dims wants NAME=V with V >= 1, got {part!r}")
            dims[key] = int(value)
    return dims


def parse_shapes(items, names):
    shapes = {}
    for item in items:
        name, sep, text = item.rpartition("=")
        if not sep:
            if len(names) != 1:
                fail(f"--input-shape {item!r}: the model has inputs {names}; write INPUT=SHAPE")
            name = names[0]
        if name not in names:
            fail(f"--input-shape {item!r}: no input {name!r} (inputs: {names})")
        parts = text.replace(",", "x").split("x") if text else []
        if not all(p.isdigit() for p in parts):
            fail(f"--input-shape {item!r}: want D0xD1x... with whole numbers")
        shapes[name] = [int(p) for p in parts]
    return shapes


def resolve_shape(name, declared, batch, dims, given):
    """The concrete shape of input `name`; declared holds ints, strings (named symbolic) and None."""
    if name in given:
        shape = given[name]
        if shape and shape[0] != batch:
            fail(f"--input-shape of {name!r} has axis 0 = {shape[0]}, not the batch {batch}")
        return shape
    shape = []
    for axis, dim in enumerate(declared):
        if axis == 0:
            if isinstance(dim, int) and dim != batch:
                fail(f"input {name!r} fixes its batch axis (axis 0) to {dim}; batch {batch} needs a model "
                     "exported with a dynamic axis 0")
            shape.append(batch)
        elif isinstance(dim, int):
            shape.append(dim)
        else:
            for key in (dim, f"{name}:{axis}", "*"):
                if key and key in dims:
                    shape.append(dims[key])
                    break
            else:
                label = f"{dim!r}" if dim else "unnamed"
                fail(f"input {name!r} axis {axis} is symbolic ({label}): give its size with --dims "
                     f"{dim or f'{name}:{axis}'}=V (declared shape {['?' if d is None else d for d in declared]})")
    return shape


def percentile(sorted_values, q):
    """Nearest rank: the smallest value with at least q of the runs at or below it."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--dims", action="append", default=[])
    p.add_argument("--input-shape", action="append", default=[])
    p.add_argument("--int-range", default="0:2")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.batch < 1 or a.runs < 1 or a.warmup < 0 or a.threads < 1:
        fail("--batch, --runs and --threads must be >= 1, --warmup >= 0")
    lo, sep, hi = a.int_range.partition(":")
    try:
        lo, hi = int(lo), int(hi)
    except ValueError:
        lo = hi = 0
    if not sep or hi <= lo:
        fail(f"--int-range wants LO:HI with HI > LO, got {a.int_range!r}")

    options = ort.SessionOptions()
    options.intra_op_num_threads = a.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(a.model, options, providers=["CPUExecutionProvider"])

    metas = session.get_inputs()
    dims = parse_dims(a.dims)
    given = parse_shapes(a.input_shape, [m.name for m in metas])
    rng = np.random.default_rng(a.seed)
    feeds, described = {}, []
    for m in metas:
        if m.type not in DTYPES:
            fail(f"input {m.name!r} has type {m.type}, which this runner does not generate")
        dtype_name, dtype = DTYPES[m.type]
        shape = resolve_shape(m.name, list(m.shape), a.batch, dims, given)
        if dtype_name == "bool":
            value = rng.integers(0, 2, shape).astype(np.bool_)
        elif np.issubdtype(dtype, np.integer):
            value = rng.integers(lo, hi, shape).astype(dtype)
        else:
            value = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        feeds[m.name] = value
        described.append({"name": m.name, "dtype": dtype_name, "shape": shape,
                          "declared": [d if d is not None else "?" for d in m.shape]})

    for _ in range(a.warmup):
        session.run(None, feeds)
    times = []
    for _ in range(a.runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1e3)
    ordered = sorted(times)
    print(json.dumps({
        "median_ms": round(float(np.median(ordered)), 4), "p90_ms": round(percentile(ordered, 0.9), 4),
        "runs": a.runs, "batch": a.batch, "threads": a.threads, "ort_version": ort.__version__,
        "runner": "python", "model": a.model, "warmup": a.warmup, "min_ms": round(ordered[0], 4),
        "mean_ms": round(sum(times) / len(times), 4), "times_ms": [round(t, 3) for t in times],
        "inputs": described,
    }))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # ONNX Runtime's errors (loading, running) as one line, exit 1
        print(f"bench_deploy_ort.py: {e}", file=sys.stderr)
        sys.exit(1)
