"""One row of a benchmark table from the report.json files of repeated runs.
Appends the row to RESULTS and prints the rate (the base of later rows' speed-up).
Usage: bench_row.py RESULTS RANKS BASE_RATE PHASE_PREFIX DIVISOR SAMPLES REPORT.json...
  seconds per run = sum over phases starting with PHASE_PREFIX of max(seconds_per_rank) / DIVISOR,
  or, with PHASE_PREFIX `steps`, the median fine-tuning step time from step WARMUP_STEPS + 1 on
  (the first steps, in a last column, carry one-time work: allocator, cuDNN plans);
  the row shows the median over runs; rate = SAMPLES / seconds"""
import json
import statistics
import sys

WARMUP_STEPS = 3


def run_seconds(report, prefix, divisor):
    if prefix == "steps":
        steps = report["fine_tune"]["step_seconds"]
        return statistics.median(steps[WARMUP_STEPS:] or steps), sum(steps[:WARMUP_STEPS])
    phases = report["phases"]
    return sum(max(p["seconds_per_rank"]) for p in phases if p["phase"].startswith(prefix)) / divisor, None


def main(results, ranks, base, prefix, divisor, samples, reports):
    runs = [run_seconds(json.load(open(path)), prefix, divisor) for path in reports]
    seconds = statistics.median(r[0] for r in runs)
    rate = samples / seconds
    base = base or rate
    warmup = f" {statistics.median(r[1] for r in runs):.2f} |" if prefix == "steps" else ""
    with open(results, "a") as f:
        f.write(f"| {ranks} | {seconds:.3f} | {rate:.0f} | {rate / base:.2f}x | {100 * rate / base / ranks:.0f}% |{warmup} "
                f"{', '.join(f'{r[0]:.3f}' for r in runs)} |\n")
    print(rate)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], int(a[1]), float(a[2]), a[3], float(a[4]), float(a[5]), a[6:])
