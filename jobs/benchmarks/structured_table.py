"""Combines jobs/benchmarks/bench_structured.sh's runs: for each model and share of channels
removed, the parameters (report.json of the compile) and the float and INT8 files' speed in ONNX
Runtime, each against the dense float file. Usage: structured_table.py RESULTS_DIR
(SPARSITIES and WORK as bench_structured.sh sets them)."""
import json
import os
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def main():
    out = sys.argv[1]
    sparsities = os.environ["SPARSITIES"].split()
    work = os.environ["WORK"]
    runs = {s: load(os.path.join(out, f"s{s}", "results.json")) for s in sparsities
            if os.path.exists(os.path.join(out, f"s{s}", "results.json"))}
    if not runs:
        sys.exit("structured_table.py: no results.json under " + out)
    first = next(iter(runs.values()))
    batch = first["throughput"]["batch"]
    rows = []
    dense_parameters = {}  # a pruned compile's report holds the dense model's count too
    for s in runs:
        for model in [m["name"] for m in first["models"]]:
            report = os.path.join(work, f"s{s}", model, "report.json")
            if os.path.exists(report) and "structured_pruning" in load(report):
                dense_parameters[model] = load(report)["structured_pruning"]["dense_parameters"]
    for model in [m["name"] for m in first["models"]]:
        dense = next((m for m in runs.get("0", first)["models"] if m["name"] == model), {})
        base = dense.get("float", {})
        for s, run in runs.items():
            entry = next((m for m in run["models"] if m["name"] == model), None)
            if not entry or "failed" in entry:
                rows.append({"model": model, "removed": float(s), "failed": (entry or {}).get("failed", "no run")})
                continue
            report = os.path.join(work, f"s{s}", model, "report.json")
            structured = load(report).get("structured_pruning", {}) if os.path.exists(report) else {}
            row = {"model": model, "removed": float(s),
                   "parameters": structured.get("parameters", dense_parameters.get(model) if s == "0" else None)}
            for fmt in ("float", "int8"):
                part = entry.get(fmt, {})
                for key, name in (("latency", "b1_ms"), ("throughput", f"b{batch}_ms")):
                    if key in part:
                        row[f"{fmt}_{name}"] = part[key]["median_ms"]
                        if key in base:
                            row[f"{fmt}_{name}_speedup"] = round(base[key]["median_ms"] / part[key]["median_ms"], 2)
            rows.append(row)
    with open(os.path.join(out, "structured.json"), "w") as f:
        json.dump({"machine": first["machine"], "onnxruntime": first["onnxruntime"], "commit": first.get("commit"),
                   "throughput_batch": batch, "rows": rows}, f, indent=1)
    lines = [f"Machine: {first['machine'].get('cpu', '?')}, {first['onnxruntime']['intra_op_threads']} threads, "
             f"onnxruntime {first['onnxruntime']['version']} ({first['onnxruntime']['runner']}); commit "
             f"{first.get('commit')}. Medians; speed-up against the dense float file.", "",
             f"| model | channels removed | parameters | float b1 ms | float b{batch} ms | INT8 b1 ms | "
             f"INT8 b{batch} ms | float b1 speed-up | float b{batch} speed-up | INT8 b1 speed-up | "
             f"INT8 b{batch} speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['model']} | {r['removed']:.0%} | failed: {r['failed']} | | | | | | | | |")
            continue
        cell = lambda k, fmt="{:.1f}": fmt.format(r[k]) if r.get(k) is not None else "-"  # noqa: E731
        lines.append(f"| {r['model']} | {r['removed']:.0%} | {cell('parameters', '{:,}')} | {cell('float_b1_ms')} | "
                     f"{cell(f'float_b{batch}_ms')} | {cell('int8_b1_ms')} | {cell(f'int8_b{batch}_ms')} | "
                     f"{cell('float_b1_ms_speedup', '{:.2f}x')} | {cell(f'float_b{batch}_ms_speedup', '{:.2f}x')} | "
                     f"{cell('int8_b1_ms_speedup', '{:.2f}x')} | "
                     f"{cell(f'int8_b{batch}_ms_speedup', '{:.2f}x')} |")
    with open(os.path.join(out, "structured.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
