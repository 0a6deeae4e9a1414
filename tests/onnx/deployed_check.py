"""The deployed-file check the accuracy tests share: a compile's report.json must hold the
ONNX file's run in onnxruntime, agreeing with the TorchScript model (top-1 at least 99.5%,
output SQNR at least 35 dB). Where this machine has no onnxruntime (neither onnxruntime-node
nor Python's), the missing run is reported, not failed."""
from onnx_check import Skip, runner

MIN_AGREEMENT = 0.995
MIN_SQNR_DB = 35.0


def onnxruntime_available():
    try:
        runner()
        return True
    except Skip:
        return False


def check_deployed(label, report, rows=None):
    """Asserts the ONNX run in `report` (a parsed report.json); returns its evaluation or None."""
    onnx = report.get("onnx", {}).get("evaluation")
    if onnx is None:
        why = report.get("onnx", {}).get("not_evaluated", "no ONNX file")
        assert not onnxruntime_available(), f"{label}: ONNX not evaluated although onnxruntime loads: {why}"
        print(f"{label}: ONNX not evaluated: {why}")
        return None
    metric = (f"perplexity {onnx['onnx_perplexity']:.4f} (TorchScript {onnx['torchscript_perplexity']:.4f})"
              if "onnx_perplexity" in onnx else f"top-1 {100 * onnx['onnx_top1']:.2f}%" if "onnx_top1" in onnx else "")
    print(f"{label}: ONNX {metric}, top-1 agreement with TorchScript {100 * onnx['top1_agreement']:.2f}%, "
          f"SQNR {onnx['output_sqnr_db']} dB on {onnx['rows']} rows")
    if rows is not None:
        assert onnx["rows"] == rows, f"{label}: the ONNX file ran on {onnx['rows']} of the {rows} held-out rows"
    assert onnx["top1_agreement"] >= MIN_AGREEMENT, f"{label}: ONNX agrees with TorchScript on {onnx['top1_agreement']:.4f}"
    sqnr = onnx["output_sqnr_db"]  # null: identical outputs
    assert sqnr is None or sqnr >= MIN_SQNR_DB, f"{label}: ONNX output SQNR {sqnr} dB"
    return onnx
