"""Prints float vs compiled top-1 accuracy and model sizes from qforge report.json files,
and, where the compile wrote model.qforge.onnx and ran it in onnxruntime, the ONNX file's
top-1, its agreement with the TorchScript model and its size.
Usage: accuracy_table.py REPORT.json..."""
import json
import sys


def main(paths):
    print(f"{'model':<24}{'held-out':>9}{'float top-1':>13}{'compiled':>10}{'change':>9}{'size float':>12}"
          f"{'deployed':>10}{'ONNX top-1':>12}{'agree':>9}{'ONNX file':>12}")
    for path in paths:
        r = json.load(open(path))
        e, s = r["evaluation"], r["sizes"]
        fp, q = 100 * e["float_top1"], 100 * e["compiled_top1"]
        onnx = r.get("onnx", {}).get("evaluation")
        onnx_cols = (f"{100 * onnx['onnx_top1']:>11.2f}%{100 * onnx['top1_agreement']:>8.2f}%"
                     if onnx and "onnx_top1" in onnx else f"{'-':>12}{'-':>9}")
        onnx_size = f"{s['onnx_file_bytes'] / 1024:>8.1f} KiB" if "onnx_file_bytes" in s else f"{'-':>12}"
        print(f"{r['graph_name']:<24}{e['labelled']:>9}{fp:>12.2f}%{q:>9.2f}%{q - fp:>+8.2f}"
              f"{s['float_bytes'] / 1024:>9.1f} KiB{s['deployed_bytes'] / 1024:>6.1f} KiB{onnx_cols}{onnx_size}")


if __name__ == "__main__":
    main(sys.argv[1:])
