"""Helpers for the ONNX export tests: run an exported model in a real onnxruntime
(onnxruntime-node through src/export/runners/ort_run.js where Node.js has it, as
on Debian; else Python's onnxruntime through ort_run.py, as on the GPU machines),
run a TorchScript model
in Python's torch, read qforge's HDF5 samples, and compare outputs.

    ys = run_onnx("model.qforge.onnx", {"x": x}, batch_size=32, threads=2)
    refs = torchscript_outputs("model.qforge.pt", {"x": x})
    sqnr_db(refs[0], ys[0]), top1_agreement(refs[0], ys[0])

run_onnx raises Skip when neither runtime is there: test_onnx_export.py skips the
test (pytest.skip), deployed_check.py reports the missing run."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

SOURCE = os.environ.get("QFORGE_SOURCE_DIR") or os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
RUNNERS_DIR = os.path.join(SOURCE, "src", "export", "runners")
NO_RUNTIME_EXIT = 3  # the runners' exit code where their onnxruntime cannot be loaded


class Skip(Exception):
    """The test cannot run here (no onnxruntime)."""


def _candidate_runners():
    node = os.environ.get("QFORGE_NODE") or shutil.which("node") or shutil.which("nodejs")
    if node:
        yield [node, os.path.join(RUNNERS_DIR, "ort_run.js")]
    yield [sys.executable, os.path.join(RUNNERS_DIR, "ort_run.py")]


_runner = None


def runner():
    """(command, version line) of the first runner whose onnxruntime loads; Skip if none."""
    global _runner
    if _runner is None:
        missing = []
        for command in _candidate_runners():
            p = subprocess.run(command + ["--version"], capture_output=True, text=True, timeout=120)
            if p.returncode == NO_RUNTIME_EXIT:
                missing.append(p.stderr.strip())
                continue
            if p.returncode != 0:
                raise AssertionError(f"{' '.join(command)} --version: exit {p.returncode}\n{p.stderr}{p.stdout}")
            _runner = (command, p.stdout.strip())
            break
        else:
            raise Skip("no onnxruntime (bash jobs/setup.sh installs onnxruntime-node): " + "; ".join(missing))
    return _runner


def require_onnxruntime():
    """Raises Skip unless a runner can load onnxruntime; returns its version line."""
    return runner()[1]


def _dtype_name(a):
    if a.dtype == np.bool_:
        return "bool"
    name = a.dtype.name
    if name not in ("float32", "float64", "float16", "int8", "uint8", "int16", "uint16", "int32", "uint32",
                    "int64", "uint64"):
        raise ValueError(f"run_onnx: dtype {name} has no ONNX Runtime tensor type")
    return name


def run_onnx_named(model_path, inputs, batch_size=32, threads=2, optimization="all", session_config=None):
    """Runs MODEL on the rows of `inputs` (name -> array, axis 0 the row) in batches
    of `batch_size`; returns [(output name, array)] in the model's output order.
    optimization: onnxruntime's graph optimization level (disabled, basic, extended,
    all); session_config: onnxruntime session configuration entries."""
    command = runner()[0]
    work = tempfile.mkdtemp(prefix="qforge-ort-")
    try:
        entries = []
        for i, (name, a) in enumerate(inputs.items()):
            a = np.asarray(a)
            path = os.path.join(work, f"input_{i}.bin")
            dtype = _dtype_name(a)
            np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False).tofile(path)
            entries.append({"name": name, "dtype": dtype, "shape": list(a.shape), "file": path})
        manifest = os.path.join(work, "manifest.json")
        with open(manifest, "w") as f:
            json.dump({"inputs": entries, "batch_size": batch_size, "threads": threads,
                       "outputs_dir": os.path.join(work, "outputs"), "graph_optimization_level": optimization,
                       "session_config": session_config or {}}, f)
        p = subprocess.run(command + [os.path.abspath(model_path), manifest], capture_output=True, text=True,
                           timeout=600)
        if p.returncode != 0:
            raise AssertionError(f"{command[1]} failed on {model_path} (exit {p.returncode}):\n{p.stderr}{p.stdout}")
        with open(os.path.join(work, "outputs", "outputs.json")) as f:
            report = json.load(f)
        outputs = []
        for o in report["outputs"]:
            dtype = np.dtype(o["dtype"]).newbyteorder("<")
            y = np.fromfile(o["file"], dtype=dtype).astype(np.dtype(o["dtype"]), copy=False).reshape(o["shape"])
            outputs.append((o["name"], y))
        return outputs
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_onnx(model_path, inputs, batch_size=32, threads=2):
    """The model's outputs (list of arrays, the model's output order) on `inputs`."""
    return [y for _, y in run_onnx_named(model_path, inputs, batch_size, threads)]


def sqnr_db(ref, x):
    """Signal-to-quantization-noise ratio of x against ref, in dB (inf when equal)."""
    ref = np.asarray(ref, np.float64)
    x = np.asarray(x, np.float64)
    if ref.shape != x.shape:
        raise AssertionError(f"sqnr_db: shapes differ: {ref.shape} vs {x.shape}")
    noise = np.sum((ref - x) ** 2)
    signal = np.sum(ref ** 2)
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(signal / noise))


def top1_agreement(ref, x):
    """Fraction of rows whose argmax over the last axis is the same in ref and x."""
    ref = np.asarray(ref)
    x = np.asarray(x)
    if ref.shape != x.shape:
        raise AssertionError(f"top1_agreement: shapes differ: {ref.shape} vs {x.shape}")
    return float(np.mean(np.argmax(ref, axis=-1) == np.argmax(x, axis=-1)))


def load_rows(h5_path, names=None):
    """Every group of a qforge HDF5 file (groups in name order, as qforge takes them):
    name -> [array of the group's rows, ...]. `names` defaults to the file's input_names;
    "labels" may be asked for too."""
    import h5py
    with h5py.File(h5_path, "r") as f:
        if names is None:
            names = f.attrs["input_names"]
            names = (names.decode() if isinstance(names, bytes) else str(names)).split(",")
        groups = sorted(f["samples"].keys())
        return {n: [f["samples"][g][n][()] for g in groups] for n in names}


def torchscript_outputs(pt_path, inputs, batch_size=32):
    """Runs a TorchScript model (torch.jit.load, eval, no_grad) on `inputs` (name ->
    array, positional in that order; or a sequence of arrays) in batches; returns the
    outputs as a list of arrays (a tuple output flattened, a dict's values by key)."""
    import torch
    torch.set_num_threads(2)
    arrays = list(inputs.values()) if isinstance(inputs, dict) else list(inputs)
    model = torch.jit.load(pt_path, map_location="cpu").eval()
    rows = len(arrays[0])
    chunks = None
    with torch.no_grad():
        for start in range(0, rows, batch_size):
            args = [torch.from_numpy(np.ascontiguousarray(a[start:start + batch_size])) for a in arrays]
            y = model(*args)
            if isinstance(y, dict):  # a dict's entries by key, as the ONNX file lists them
                y = [y[k] for k in sorted(y)]
            ys = list(y) if isinstance(y, (tuple, list)) else [y]
            ys = [t for t in ys if t is not None]  # None items are not outputs of the ONNX file
            ys = [t.detach().cpu().numpy() for t in ys]
            chunks = [[t] for t in ys] if chunks is None else [c + [t] for c, t in zip(chunks, ys)]
    return [np.concatenate(c, axis=0) for c in chunks]


# --- Reading the exported file with Debian's python3-onnx (1.12: opsets <= 17) ------

def load_onnx(path):
    import onnx
    return onnx.load(path, load_external_data=False)


def graph_inputs(model):
    """[(name, [dim_param or dim_value or None per axis], elem_type)] of the graph's
    real inputs (initializers listed as inputs by older exporters left out)."""
    initializers = {t.name for t in model.graph.initializer}
    out = []
    for v in model.graph.input:
        if v.name in initializers:
            continue
        tensor = v.type.tensor_type
        dims = []
        for d in tensor.shape.dim:
            if d.HasField("dim_param"):
                dims.append(d.dim_param)
            elif d.HasField("dim_value"):
                dims.append(d.dim_value)
            else:
                dims.append(None)
        out.append((v.name, dims, tensor.elem_type))
    return out


def opset_version(model, domain=""):
    for o in model.opset_import:
        if o.domain in (domain, "ai.onnx" if domain == "" else domain):
            return o.version
    return None


def initializer_types(model):
    """{initializer name: data_type} (an int: 22 is INT4, which python3-onnx 1.12 does
    not name; the field is a plain int32 in the protobuf, so it reads back as is)."""
    return {t.name: t.data_type for t in model.graph.initializer}


def op_types(model):
    return [n.op_type for n in model.graph.node]
