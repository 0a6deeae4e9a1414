"""Prints float vs compiled top-1 accuracy and model sizes from qforge report.json files.
Usage: accuracy_table.py REPORT.json..."""
import json
import sys


def main(paths):
    print(f"{'model':<24}{'held-out':>9}{'float top-1':>13}{'compiled':>10}{'change':>9}{'size float':>12}"
          f"{'deployed':>10}")
    for path in paths:
        r = json.load(open(path))
        e, s = r["evaluation"], r["sizes"]
        fp, q = 100 * e["float_top1"], 100 * e["compiled_top1"]
        print(f"{r['graph_name']:<24}{e['labelled']:>9}{fp:>12.2f}%{q:>9.2f}%{q - fp:>+8.2f}"
              f"{s['float_bytes'] / 1024:>9.1f} KiB{s['deployed_bytes'] / 1024:>6.1f} KiB")


if __name__ == "__main__":
    main(sys.argv[1:])
