#!/usr/bin/env python3
"""Runs an ONNX model in Python's onnxruntime on a whole set of rows, in batches,
and writes the outputs. ort_run.js does the same in onnxruntime-node; both take
the same command line and files.

    python3 ort_run.py MODEL.onnx MANIFEST.json

MANIFEST.json:
    {"inputs": [{"name": "x", "dtype": "float32", "shape": [N, ...], "file": "/abs/x.bin"}, ...],
     "batch_size": B, "threads": T, "outputs_dir": "/abs/dir"}
Optional keys: "graph_optimization_level" ("disabled" | "basic" | "extended" | "all",
default "all": what a deployment gets), "device" ("cpu" default, or "cuda": needs
the onnxruntime-gpu package), "session_config" ({key: value} strings: onnxruntime's
session configuration entries, e.g. {"session.qdq_matmulnbits_accuracy_level": "1"}:
at "extended" and above onnxruntime turns an int4 DequantizeLinear + MatMul into
MatMulNBits, which by default (level 4) computes with int8-quantized activations).

Every .bin holds raw little-endian row-major data of the whole set, axis 0 the
row; every input has the same number of rows. The model runs on consecutive
slices of B rows (the last may be smaller; B = 0 runs every row at once), each
output is concatenated along axis 0 and written raw to
<outputs_dir>/output_<i>.bin (i in the model's output order), with
<outputs_dir>/outputs.json:
    {"outputs": [{"name", "dtype", "shape", "file"}], "seconds": <time inside run()>,
     "rows": N, "batches": K, "runtime": "onnxruntime 1.20.1 (python 3.11.2)"}
Dtypes: float32 float64 float16 int8 uint8 int16 uint16 int32 uint32 int64 uint64 bool
(bool as one byte per element). T = 0: onnxruntime's default thread count.

`python3 ort_run.py --version` prints onnxruntime's version (exit 3 where it cannot
be imported).

Exit status: 0 done; 1 bad model, manifest, data or a failed run (one line on
stderr naming the model and manifest); 2 bad command line; 3 onnxruntime (or
NumPy) cannot be imported.
"""
import json
import os
import platform
import sys
import time

SCRIPT = "ort_run.py"
INSTALL_HINT = "install it with `pip install onnxruntime` (onnxruntime-gpu for CUDA)"
DTYPES = ("float32", "float64", "float16", "int8", "uint8", "int16", "uint16", "int32", "uint32",
          "int64", "uint64", "bool")
LEVELS = ("disabled", "basic", "extended", "all")


class Failure(Exception):
    pass


def one_line(text):
    return " ".join(str(text).split())


def load_modules():
    try:
        import numpy
    except Exception as e:  # noqa: BLE001 - any import failure means the same to the user
        sys.stderr.write(f"{SCRIPT}: NumPy cannot be imported ({one_line(e)}); install it with `pip install numpy`\n")
        sys.exit(3)
    try:
        import onnxruntime
    except ModuleNotFoundError:
        sys.stderr.write(f"{SCRIPT}: the Python package onnxruntime is not installed; {INSTALL_HINT}\n")
        sys.exit(3)
    except Exception as e:  # noqa: BLE001
        sys.stderr.write(f"{SCRIPT}: onnxruntime does not load ({one_line(e)}); {INSTALL_HINT}\n")
        sys.exit(3)
    return numpy, onnxruntime


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def read_manifest(manifest_path):
    try:
        with open(manifest_path) as f:
            text = f.read()
    except OSError as e:
        raise Failure(f"cannot read the manifest: {e}")
    try:
        m = json.loads(text)
    except ValueError as e:
        raise Failure(f"the manifest is not JSON: {e}")
    if not isinstance(m, dict):
        raise Failure("the manifest is not a JSON object")
    if not isinstance(m.get("inputs"), list) or not m["inputs"]:
        raise Failure('"inputs" must be a non-empty list')
    batch_size = m.get("batch_size", 0)
    if not is_int(batch_size) or batch_size < 0:
        raise Failure(f'"batch_size" must be an integer >= 0, got {json.dumps(m.get("batch_size"))}')
    threads = m.get("threads", 0)
    if not is_int(threads) or threads < 0:
        raise Failure(f'"threads" must be an integer >= 0, got {json.dumps(m.get("threads"))}')
    if not isinstance(m.get("outputs_dir"), str) or not m["outputs_dir"]:
        raise Failure('"outputs_dir" must be a path')
    level = m.get("graph_optimization_level", "all")
    if level not in LEVELS:
        raise Failure(f'"graph_optimization_level" must be disabled, basic, extended or all, got {json.dumps(level)}')
    device = m.get("device", "cpu")
    if device not in ("cpu", "cuda"):
        raise Failure(f'"device" must be cpu or cuda, got {json.dumps(device)}')
    session_config = m.get("session_config", {})
    if not isinstance(session_config, dict) or not all(isinstance(v, str) for v in session_config.values()):
        raise Failure('"session_config" must be an object of strings')
    base = os.path.dirname(os.path.abspath(manifest_path))
    inputs, seen = [], set()
    for i, inp in enumerate(m["inputs"]):
        if not isinstance(inp, dict):
            raise Failure(f"inputs[{i}] is not an object")
        name = inp.get("name")
        if not isinstance(name, str) or not name:
            raise Failure(f'inputs[{i}]: "name" must be a string')
        if name in seen:
            raise Failure(f"input '{name}' is listed twice")
        seen.add(name)
        if inp.get("dtype") not in DTYPES:
            raise Failure(f"input '{name}': dtype {json.dumps(inp.get('dtype'))} is not one of {', '.join(DTYPES)}")
        shape = inp.get("shape")
        if not isinstance(shape, list) or not shape or not all(is_int(d) and d >= 0 for d in shape):
            raise Failure(f"input '{name}': \"shape\" must list at least the row axis, as integers >= 0, "
                          f"got {json.dumps(shape)}")
        if not isinstance(inp.get("file"), str) or not inp["file"]:
            raise Failure(f"input '{name}': \"file\" must be a path")
        inputs.append({"name": name, "dtype": inp["dtype"], "shape": shape,
                       "file": os.path.join(base, inp["file"])})
    rows = inputs[0]["shape"][0]
    for inp in inputs:
        if inp["shape"][0] != rows:
            raise Failure(f"inputs disagree on the row count: '{inputs[0]['name']}' has {rows} rows, "
                          f"'{inp['name']}' has {inp['shape'][0]}")
    return {"inputs": inputs, "rows": rows, "batch_size": batch_size, "threads": threads, "level": level,
            "device": device, "session_config": session_config, "outputs_dir": os.path.join(base, m["outputs_dir"])}


def read_input(np, inp):
    dtype = np.dtype(inp["dtype"]).newbyteorder("<")
    count = 1
    for d in inp["shape"]:
        count *= d
    try:
        size = os.path.getsize(inp["file"])
    except OSError as e:
        raise Failure(f"input '{inp['name']}': cannot read {inp['file']}: {e.strerror}")
    if size != count * dtype.itemsize:
        raise Failure(f"input '{inp['name']}': {inp['file']} holds {size} bytes, shape {json.dumps(inp['shape'])} "
                      f"of {inp['dtype']} needs {count * dtype.itemsize}")
    data = np.fromfile(inp["file"], dtype=dtype).astype(np.dtype(inp["dtype"]), copy=False)
    return data.reshape(inp["shape"])


def run(model_path, manifest_path):
    np, ort = load_modules()
    m = read_manifest(manifest_path)
    if not os.path.exists(model_path):
        raise Failure("no such model file")

    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[m["level"]]
    if m["threads"] > 0:
        options.intra_op_num_threads = m["threads"]
    for key, value in m["session_config"].items():
        options.add_session_config_entry(key, value)
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if m["device"] == "cuda" else ["CPUExecutionProvider"]
    if m["device"] == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise Failure("device cuda: this onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)")
    try:
        session = ort.InferenceSession(os.path.abspath(model_path), options, providers=providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises several kinds
        raise Failure(f"onnxruntime cannot load the model: {one_line(e)}")

    input_names = [i.name for i in session.get_inputs()]
    output_names = [o.name for o in session.get_outputs()]
    given = {inp["name"]: inp for inp in m["inputs"]}
    missing = [n for n in input_names if n not in given]
    if missing:
        raise Failure(f"the model's input(s) {', '.join(repr(n) for n in missing)} are not in the manifest "
                      f"(the model takes {', '.join(input_names)})")
    extra = [inp["name"] for inp in m["inputs"] if inp["name"] not in input_names]
    if extra:
        raise Failure(f"the model has no input '{extra[0]}' (it takes {', '.join(input_names)})")
    data = {inp["name"]: read_input(np, inp) for inp in m["inputs"]}
    rows = m["rows"]
    if rows == 0:
        raise Failure("the inputs hold no rows")

    step = m["batch_size"] if m["batch_size"] > 0 else rows
    chunks = [[] for _ in output_names]
    seconds, batches = 0.0, 0
    for start in range(0, rows, step):
        n = min(step, rows - start)
        feeds = {name: a[start:start + n] for name, a in data.items()}
        where = f"rows {start}..{start + n - 1}"
        t0 = time.perf_counter()
        try:
            result = session.run(output_names, feeds)
        except Exception as e:  # noqa: BLE001
            raise Failure(f"{where}: {one_line(e)}")
        seconds += time.perf_counter() - t0
        batches += 1
        for i, (name, y) in enumerate(zip(output_names, result)):
            if not isinstance(y, np.ndarray) or y.dtype.kind not in "biuf":
                raise Failure(f"output '{name}' is not a numeric tensor: it has no raw form")
            if y.ndim == 0 and (start > 0 or start + n < rows):
                raise Failure(f"output '{name}' is a scalar: it cannot be concatenated over batches (use batch_size 0)")
            if chunks[i]:
                first = chunks[i][0]
                if y.shape[1:] != first.shape[1:]:
                    raise Failure(f"{where}: output '{name}' has shape {list(y.shape)}, earlier batches "
                                  f"{[sum(c.shape[0] for c in chunks[i])] + list(first.shape[1:])}: only axis 0 may differ")
                if y.dtype != first.dtype:
                    raise Failure(f"{where}: output '{name}' changed type from {first.dtype} to {y.dtype}")
            chunks[i].append(y)

    try:
        os.makedirs(m["outputs_dir"], exist_ok=True)
    except OSError as e:
        raise Failure(f"cannot create outputs_dir: {e}")
    outputs = []
    for i, name in enumerate(output_names):
        y = chunks[i][0] if len(chunks[i]) == 1 else np.concatenate(chunks[i], axis=0)
        path = os.path.join(m["outputs_dir"], f"output_{i}.bin")
        try:
            np.ascontiguousarray(y).astype(y.dtype.newbyteorder("<"), copy=False).tofile(path)
        except OSError as e:
            raise Failure(f"cannot write {path}: {e}")
        outputs.append({"name": name, "dtype": str(y.dtype), "shape": list(y.shape), "file": path})
    lines = ",\n".join("  " + json.dumps(o, separators=(",", ":")) for o in outputs)
    runtime = f"onnxruntime {getattr(ort, '__version__', 'unknown')} (python {platform.python_version()})"
    try:
        with open(os.path.join(m["outputs_dir"], "outputs.json"), "w") as f:
            f.write(f'{{"outputs": [\n{lines}\n ], "seconds": {seconds}, "rows": {rows}, "batches": {batches}, '
                    f'"runtime": {json.dumps(runtime)}}}\n')
    except OSError as e:
        raise Failure(f"cannot write outputs.json: {e}")


def main(argv):
    if len(argv) == 1 and argv[0] in ("-h", "--help"):
        print(f"usage: python3 {SCRIPT} MODEL.onnx MANIFEST.json\n       python3 {SCRIPT} --version")
        return 0
    if len(argv) == 1 and argv[0] == "--version":  # imports onnxruntime: exit 3 where it cannot
        _, ort = load_modules()
        print(f"onnxruntime {getattr(ort, '__version__', 'unknown')}")
        return 0
    if len(argv) != 2:
        sys.stderr.write(f"usage: python3 {SCRIPT} MODEL.onnx MANIFEST.json\n")
        return 2
    try:
        run(argv[0], argv[1])
    except Failure as e:
        sys.stderr.write(f"{SCRIPT}: {argv[0]} with {argv[1]}: {one_line(e)}\n")
        return 1
    except Exception as e:  # noqa: BLE001 - still one line naming the files
        sys.stderr.write(f"{SCRIPT}: {argv[0]} with {argv[1]}: internal error: {type(e).__name__}: {one_line(e)}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
