"""Prints float vs compiled perplexity on held-out text, and model sizes, from qforge report.json files.
Usage: perplexity_table.py REPORT.json..."""
import json
import sys


def main(paths):
    print(f"{'model':<28}{'tokens':>8}{'float ppl':>11}{'compiled':>10}{'change':>9}{'fine-tune':>11}"
          f"{'size float':>12}{'deployed':>10}")
    for path in paths:
        r = json.load(open(path))
        e, s = r["evaluation"], r["sizes"]
        fp, q = e["float_perplexity"], e["compiled_perplexity"]
        tuned = f"{r['fine_tune']['seconds']:.1f} s" if "fine_tune" in r else "-"
        print(f"{r['graph_name']:<28}{e['labelled']:>8}{fp:>11.3f}{q:>10.3f}{100 * (q / fp - 1):>+8.2f}%{tuned:>11}"
              f"{s['float_bytes'] / 1024:>9.1f} KiB{s['deployed_bytes'] / 1024:>6.1f} KiB")


if __name__ == "__main__":
    main(sys.argv[1:])
