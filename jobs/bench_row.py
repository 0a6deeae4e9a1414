"""One row of a benchmark table from the report.json files of repeated runs:
the median over runs of the seconds the named phases took on the slowest rank.
Appends the row to RESULTS and prints the rate (the base of later rows' speed-up).
Usage: bench_row.py RESULTS RANKS BASE_RATE PHASE_PREFIX DIVISOR SAMPLES REPORT.json...
  seconds per run = sum over phases starting with PHASE_PREFIX of max(seconds_per_rank) / DIVISOR
  rate = SAMPLES / seconds"""
import json
import statistics
import sys


def main(results, ranks, base, prefix, divisor, samples, reports):
    runs = []
    for path in reports:
        phases = json.load(open(path))["phases"]
        runs.append(sum(max(p["seconds_per_rank"]) for p in phases if p["phase"].startswith(prefix)) / divisor)
    seconds = statistics.median(runs)
    rate = samples / seconds
    base = base or rate
    with open(results, "a") as f:
        f.write(f"| {ranks} | {seconds:.3f} | {rate:.0f} | {rate / base:.2f}x | {100 * rate / base / ranks:.0f}% | "
                f"{', '.join(f'{r:.3f}' for r in runs)} |\n")
    print(rate)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], int(a[1]), float(a[2]), a[3], float(a[4]), float(a[5]), a[6:])
