"""The table bench_pruning.sh writes: each compile's held-out perplexity against the dense
float model's, the share of the pruned layers' weights that are zero, and the targets of
docs/pruning.md checked (Wanda and SparseGPT at 50% within 10% of dense and at least 5x
closer than magnitude; 2:4 within 5% after recovery).
Usage: pruning_table.py WORK RESULTS COMMIT "MODEL RANKS MACHINE" NAME..."""
import json
import platform
import sys

work, results, commit, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[5:]
model, ranks, machine = sys.argv[4].split(" ", 2)
gap = {}
lines = [f"Fortunes LM ({model}), held-out perplexity, {ranks} rank(s) on {platform.node()} ({machine}), {commit}; "
         "`bash jobs/benchmarks/bench_pruning.sh build`", "",
         "| compile | pruned weights zero | dense float | compiled | change |", "| --- | ---: | ---: | ---: | ---: |"]
for name in names:
    report = json.load(open(f"{work}/{name}/report.json"))
    e, p = report["evaluation"], report.get("pruning")
    fp, q = e["float_perplexity"], e["compiled_perplexity"]
    gap[name] = q / fp - 1
    zero = f"{100 * p['zeros'] / p['weights']:.1f}%" if p else "-"
    lines.append(f"| {name} | {zero} | {fp:.3f} | {q:.3f} | {100 * gap[name]:+.2f}% |")
lines.append("")
for method in ("wanda", "sparsegpt"):
    g, mag = gap.get(f"{method}-50%"), gap.get("magnitude-50%")
    if g is not None and mag is not None:
        lines.append(f"- {method} 50%: {100 * g:+.2f}% (target within 10%: {'met' if g <= 0.10 else 'NOT met'}); "
                     f"{mag / g if g > 0 else float('inf'):.1f}x closer to dense than magnitude's {100 * mag:+.2f}% "
                     f"(target 5x: {'met' if g <= 0 or mag / g >= 5 else 'NOT met'})")
for method in ("magnitude", "wanda", "sparsegpt"):
    g = gap.get(f"{method}-2of4-w8-qalora")
    if g is not None:
        lines.append(f"- {method} 2:4 after recovery (8-bit weights + QA-LoRA): {100 * g:+.2f}% "
                     f"(target within 5%: {'met' if g <= 0.05 else 'NOT met'})")
open(results, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
