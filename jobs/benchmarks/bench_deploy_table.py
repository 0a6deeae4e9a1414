"""The tables of jobs/benchmarks/bench_deploy.sh: reads RESULTS_DIR/raw/ (one JSON line per model, format
and batch from jobs/benchmarks/bench_deploy_ort.{js,py}; MODEL.info.json per model; MODEL.failed for a
model that did not get that far) and writes RESULTS_DIR/results.md and results.json.
    bench_deploy_table.py RESULTS_DIR
Environment (set by bench_deploy.sh): MODELS, THREADS, RUNNER, QFORGE_VERSION, GIT_COMMIT,
STARTED, TPUT_BATCH. Standard library only: it runs under any python3."""
import glob
import json
import os
import platform
import socket
import sys

FLAGS = ["avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"]


def machine():
    cpu, flags, cores = "unknown", set(), set()
    physical = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name" and cpu == "unknown":
                    cpu = value
                elif key == "flags" and not flags:
                    flags = set(value.split())
                elif key == "physical id":
                    physical = value
                elif key == "core id":
                    cores.add((physical, value))
    except OSError:
        pass
    return {
        "host": socket.gethostname(), "cpu": cpu,
        "logical_cpus": len(os.sched_getaffinity(0)), "logical_cpus_host": os.cpu_count(),
        "physical_cores": len(cores) or None, "sockets": len({p for p, _ in cores}) or None,
        "int8_flags": {flag: flag in flags for flag in FLAGS},
        "os": platform.platform(),
    }


def size_text(n):
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def shape_text(inputs):
    return ", ".join(f"{i['name']} {i['dtype']} {'x'.join(map(str, i['shape']))}" for i in inputs)


def main():
    out = sys.argv[1]
    raw = os.path.join(out, "raw")
    tput_batch = int(os.environ.get("TPUT_BATCH", "32"))
    names = os.environ.get("MODELS", "").split() or sorted(
        os.path.basename(p)[:-len(".info.json")] for p in glob.glob(os.path.join(raw, "*.info.json")))
    runs, models = [], []
    for name in names:
        entry = {"name": name}
        info = os.path.join(raw, f"{name}.info.json")
        if os.path.exists(info):
            with open(info) as f:
                entry.update(json.load(f))
        failed = os.path.join(raw, f"{name}.failed")
        if os.path.exists(failed):
            with open(failed) as f:
                entry["failed"] = f.read().strip()
        for fmt in ("float", "int8"):
            part = {}
            for batch, key in ((1, "latency"), (tput_batch, "throughput")):
                path = os.path.join(raw, f"{name}.{fmt}.b{batch}.json")
                if not os.path.exists(path):
                    continue
                with open(path) as f:
                    lines = [line for line in f if line.strip().startswith("{")]
                if not lines:
                    continue
                result = json.loads(lines[-1])
                runs.append(result)
                part[key] = result
                part["file"] = result["model"]
                if os.path.exists(result["model"]):
                    part["bytes"] = os.path.getsize(result["model"])
            if "throughput" in part:
                part["items_per_s"] = round(tput_batch * 1e3 / part["throughput"]["median_ms"], 1)
            if part:
                entry[fmt] = part
        f32, i8 = entry.get("float", {}), entry.get("int8", {})
        ratios = {}
        if "throughput" in f32 and "throughput" in i8:
            ratios[f"speedup_batch{tput_batch}"] = round(f32["throughput"]["median_ms"] / i8["throughput"]["median_ms"], 3)
        if "latency" in f32 and "latency" in i8:
            ratios["speedup_batch1"] = round(f32["latency"]["median_ms"] / i8["latency"]["median_ms"], 3)
        if "bytes" in f32 and "bytes" in i8:
            ratios["size_int8_over_float"] = round(i8["bytes"] / f32["bytes"], 4)
        entry["ratios"] = ratios
        models.append(entry)

    versions = sorted({r["ort_version"] for r in runs})
    runners = sorted({r["runner"] for r in runs})
    threads = sorted({r["threads"] for r in runs}) or [os.environ.get("THREADS")]
    lat = next((r for r in runs if r["batch"] == 1), None)
    tput = next((r for r in runs if r["batch"] == tput_batch), None)
    m = machine()
    report = {
        "benchmark": "deployed speed: qforge's INT8 QDQ ONNX against its float ONNX export in ONNX Runtime (CPU)",
        "date": os.environ.get("STARTED"), "machine": m,
        "onnxruntime": {"version": versions[0] if len(versions) == 1 else versions,
                        "runner": os.environ.get("RUNNER", ",".join(runners)),
                        "execution_provider": "CPU", "intra_op_threads": threads[0] if len(threads) == 1 else threads,
                        "inter_op_threads": 1, "graph_optimization": "all"},
        "qforge": os.environ.get("QFORGE_VERSION"), "commit": os.environ.get("GIT_COMMIT"),
        "compile": {"ranks": 1, "target": "onnxruntime", "preset": "default (weights int8 symmetric per channel, "
                    "activations uint8 asymmetric per tensor, QDQ)"},
        "latency": {"batch": 1, "runs": lat and lat["runs"], "warmup": lat and lat["warmup"], "statistic": "median"},
        "throughput": {"batch": tput_batch, "runs": tput and tput["runs"], "warmup": tput and tput["warmup"],
                       "statistic": f"median; items/s = {tput_batch} / median"},
        "models": models,
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")

    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in m["int8_flags"].items())
    lines = [
        "# Deployed speed: INT8 (QDQ) against float in ONNX Runtime",
        "",
        f"- machine: {m['host']}, {m['logical_cpus']} logical CPUs"
        + (f" ({m['physical_cores']} physical cores, {m['sockets']} socket(s))" if m["physical_cores"] else "")
        + f", {m['cpu']}",
        f"- CPU flags: {flags}",
        f"- ONNX Runtime {report['onnxruntime']['version']} ({report['onnxruntime']['runner']}), CPU execution provider, "
        f"{report['onnxruntime']['intra_op_threads']} intra-op threads, 1 inter-op, all graph optimizations",
        f"- qforge: {report['qforge']} (commit {report['commit']})",
        f"- date: {report['date']}",
        "- compile: `qforge compile` on 1 rank, target onnxruntime, default preset (weights int8 symmetric per "
        "channel, activations uint8 asymmetric per tensor, QDQ) -> `model.qforge.onnx`; float: "
        "`qforge export OUT --float`",
        f"- latency: batch 1, median and p90 of {report['latency']['runs']} runs after {report['latency']['warmup']} "
        f"warm-up; throughput: batch {tput_batch}, median of {report['throughput']['runs']} runs after "
        f"{report['throughput']['warmup']} warm-up; random inputs",
        "",
        f"| model | input (batch 1) | format | file size | batch 1 ms (median) | batch 1 p90 ms | batch {tput_batch} ms "
        f"(median) | items/s at batch {tput_batch} |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in models:
        if "float" not in e and "int8" not in e:
            lines.append(f"| {e['name']} | | | | | | | {e.get('failed', 'no results')} |")
            continue
        for fmt in ("float", "int8"):
            p = e.get(fmt, {})
            lat_r, tput_r = p.get("latency"), p.get("throughput")
            shape = shape_text(lat_r["inputs"]) if lat_r and fmt == "float" else ""
            unit = e.get("unit", "items")
            lines.append(" | ".join([
                f"| {e['name'] if fmt == 'float' else ''}", shape, fmt.upper() if fmt == "int8" else "FP32",
                size_text(p["bytes"]) if "bytes" in p else "",
                f"{lat_r['median_ms']:.3f}" if lat_r else "", f"{lat_r['p90_ms']:.3f}" if lat_r else "",
                f"{tput_r['median_ms']:.2f}" if tput_r else "",
                f"{p['items_per_s']:.1f} {unit}/s" if "items_per_s" in p else e.get("failed", "")]) + " |")
    lines += ["", f"| model | INT8 speed-up at batch {tput_batch} | INT8 speed-up at batch 1 | size INT8 / FP32 |",
              "| --- | ---: | ---: | ---: |"]
    for e in models:
        r = e["ratios"]
        cell = lambda key, fmt: fmt.format(r[key]) if key in r else ""  # noqa: E731
        lines.append(f"| {e['name']} | {cell(f'speedup_batch{tput_batch}', '{:.2f}x')} | "
                     f"{cell('speedup_batch1', '{:.2f}x')} | {cell('size_int8_over_float', '{:.3f}')} |")
    lines += ["", "Speed-up = FP32 median time / INT8 median time (above 1: INT8 is faster).", ""]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
