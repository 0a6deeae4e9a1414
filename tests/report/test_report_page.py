"""The report page in a real browser: Debian's chromium, headless, renders report.html of
the MNIST compiles (tests/mnist) and the fortunes language model (tests/fortunes), and a
sweep page over the MNIST compiles; the DOM must hold each chart with one mark per layer,
step and rank, the page must not be blank at a laptop's size, and it must print on A4.
The ctest report_page_in_chromium: `python3 -m pytest test_report_page.py::test_in_chromium` with
QFORGE_BUILD_DIR (where those tests compiled) and, optionally, QFORGE_REPORT_SCREENSHOT (a PNG to
write); skipped without chromium, or without compiles."""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from html.parser import HTMLParser

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import qforge_testing as qt  # noqa: E402
from qforge_testing import QFORGE, check  # noqa: E402

FLOAT_COLOUR = "#dd6b20"  # COLORS.float in src/report/report_page.html
# Flags that keep chromium off the network and its services (the machine has none).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(autouse=True)
def work():
    with qt.work_dir("qforge-report-") as path:
        yield path


def chromium(*args):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    flags = CHROMIUM_FLAGS + [f"--user-data-dir={qt.WORK}/profile"]
    p = subprocess.run([exe] + flags + list(args), capture_output=True, text=True, timeout=120)
    check(p.returncode == 0, f"chromium {' '.join(args)}: exit {p.returncode}\n{p.stderr[-2000:]}")
    return p.stdout


class Marks(HTMLParser):
    """Counts, per chart (svg data-chart), its marks (class "mark"), its chosen-range lines
    (class "range") and threshold lines (class "threshold"), and the layer table's rows."""

    def __init__(self):
        super().__init__()
        self.chart, self.marks, self.table_rows, self.ready, self.in_layers = None, {}, 0, False, False
        self.lines = {}  # (chart, "range" | "threshold") -> count
        self.floats = 0  # sensitivity bars of layers kept in floating point

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body" and a.get("data-ready") == "true":
            self.ready = True
        if tag == "svg" and "data-chart" in a:
            self.chart = a["data-chart"]
            self.marks.setdefault(self.chart, 0)
        elif self.chart:
            classes = a.get("class", "").split()
            if "mark" in classes:
                self.marks[self.chart] += 1
                self.floats += self.chart == "sensitivity" and a.get("fill") == FLOAT_COLOUR
            for line in ("range", "threshold"):
                if line in classes:
                    self.lines[(self.chart, line)] = self.lines.get((self.chart, line), 0) + 1
        if tag == "table":
            self.in_layers = a.get("data-table") == "layers"
        if tag == "tr" and self.in_layers and "data-layer" in a:
            self.table_rows += 1

    def handle_endtag(self, tag):
        if tag == "svg":
            self.chart = None
        if tag == "table":
            self.in_layers = False


def rendered(page):
    parser = Marks()
    parser.feed(chromium("--dump-dom", "file://" + os.path.abspath(page)))
    check(parser.ready, f"{page}: the page's script did not finish (no data-ready)")
    return parser


def png_not_blank(path):
    """Decodes the PNG's pixel rows and wants more than a background colour in them."""
    data = open(path, "rb").read()
    check(data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG")
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    check(width >= 1000 and height >= 700, f"{path}: {width}x{height}")
    # Filtered rows: a one-colour page is nearly all zero bytes after the filters.
    busy = sum(1 for b in raw if b) / len(raw)
    check(busy > 0.01, f"{path} looks blank ({100 * busy:.3f}% non-zero filtered bytes)")
    return width, height, busy


def check_run_page(out_dir):
    report = json.load(open(os.path.join(out_dir, "report.json")))
    page = os.path.join(out_dir, "report.html")
    check(os.path.exists(page), f"{out_dir}: no report.html")
    marks = rendered(page)
    layers = report["layers"]
    sensitivity = sum(1 for l in layers if "sensitivity" in l)
    weighted = [l for l in layers if "weight_sqnr_db" in l]
    expected = {"phases": len(report["phases"]) * report["ranks"],
                "sqnr": len(weighted) + sum(1 for l in weighted if l.get("sensitivity", 0) > 0)}
    if sensitivity:
        expected["sensitivity"] = sensitivity
    pruned = [l for l in layers if "sparsity" in l.get("pruning", {})]
    if pruned:
        expected["sparsity"] = len(pruned)
    if report.get("structured_pruning"):
        expected["channel-groups"] = len(report["structured_pruning"]["groups"])
    if report.get("fine_tune", {}).get("loss"):
        expected["loss"] = len(report["fine_tune"]["loss"])
        if report["fine_tune"]["evaluations"]:
            expected["evaluations"] = len(report["fine_tune"]["evaluations"])
    histograms = [l for l in layers if "input_histogram" in l]
    if histograms:
        expected["histogram-chosen"] = len(histograms[0]["input_histogram"]["counts"])
        worst = min(5, len(histograms))  # the five worst, or every layer with a histogram
        check(marks.lines.get(("histogram-chosen", "range"), 0) >= 1, f"{page}: the chosen layer's range is not drawn")
        check(marks.lines.get(("histogram-worst", "range"), 0) >= worst, f"{page}: ranges missing in the five worst")
        bins = sorted(len(l["input_histogram"]["counts"]) for l in histograms)
        check(min(bins) * worst <= marks.marks.get("histogram-worst", 0) <= max(bins) * worst,
              f"{page}: {marks.marks.get('histogram-worst')} bars in the five worst histograms of {bins} bins")
    expected["sizes"] = sum(1 for k in ("float_bytes", "model_file_bytes", "deployed_bytes", "onnx_file_bytes")
                            if report["sizes"].get(k) is not None)
    if report.get("evaluation"):
        expected["accuracy"] = 3 if report.get("onnx", {}).get("evaluation") else 2
    if sensitivity and re.search(r"sensitivity_threshold:\s*[0-9.]", report.get("config", "")):
        check(marks.lines.get(("sensitivity", "threshold")) == 1, f"{page}: no threshold line in the sensitivity chart")
    for chart, count in expected.items():
        check(marks.marks.get(chart) == count, f"{page}: chart '{chart}' has {marks.marks.get(chart)} marks, expected {count}")
    check(marks.table_rows == len(layers), f"{page}: layer table has {marks.table_rows} rows for {len(layers)} layers")
    print(f"{report['graph_name']}: " + ", ".join(f"{c} {n}" for c, n in sorted(marks.marks.items())) +
          f", table {marks.table_rows} rows")
    return page


def check_threshold_drawn(out_dir):
    """A threshold between the layers' sensitivities: `qforge report` redraws the page with
    the dashed line and the layers above it in the float colour."""
    report = json.load(open(os.path.join(out_dir, "report.json")))
    measured = sorted(l["sensitivity"] for l in report["layers"] if "sensitivity" in l)
    if len(measured) < 2:
        return
    threshold = (measured[-1] + measured[-2]) / 2
    for layer in report["layers"]:
        if layer.get("sensitivity", 0) > threshold:
            layer["decision"], layer["reason"] = "float", f"sensitivity above the threshold {threshold:.6g}"
    report["config"] = re.sub(r"sensitivity_threshold: [^,}]*", f"sensitivity_threshold: {threshold:.6g}", report["config"])
    copy = os.path.join(qt.WORK, "with_threshold")
    os.makedirs(copy)
    json.dump(report, open(os.path.join(copy, "report.json"), "w"))
    subprocess.run([QFORGE, "report", copy], check=True, capture_output=True)
    marks = rendered(os.path.join(copy, "report.html"))
    check(marks.lines.get(("sensitivity", "threshold")) == 1, "no threshold line in the sensitivity chart")
    check(marks.floats == 1, f"{marks.floats} sensitivity bars in the float colour, expected the 1 above {threshold:.6g}")
    print(f"threshold {threshold:.6g}: one line, one layer drawn as kept in floating point")


def pruned_run():
    """wide_mlp pruned 2:4 by Wanda and quantized: the page's sparsity chart, a bar per pruned layer."""
    config = qt.write_config("pruned.yaml", f"""
model: {{path: {qt.ASSETS}/wide_mlp_traced.pt}}
out_dir: pruned
calibration_inputs: {{files: [{qt.ASSETS}/vectors64.h5], batch_size: 8}}
deployment_settings: {{target: libtorch}}
quantization_settings: {{activations: {{enabled: false}}}}
pruning_settings: {{method: wanda, pattern: "2:4"}}
""")
    qt.run(["compile", config])
    return os.path.join(qt.WORK, "pruned")


def structured_run():
    """wide_mlp with half its neurons removed: the page's channel-group chart, a bar per group."""
    config = qt.write_config("structured.yaml", f"""
model: {{path: {qt.ASSETS}/wide_mlp_traced.pt}}
out_dir: structured
calibration_inputs: {{files: [{qt.ASSETS}/vectors64.h5], batch_size: 8}}
deployment_settings: {{target: libtorch}}
quantization_settings: {{activations: {{enabled: false}}}}
pruning_settings: {{method: structured, sparsity: 0.5}}
""")
    qt.run(["compile", config])
    return os.path.join(qt.WORK, "structured")


def test_in_chromium(work):
    build, screenshot = os.environ["QFORGE_BUILD_DIR"], os.environ.get("QFORGE_REPORT_SCREENSHOT")
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("no chromium (apt-get install chromium)")
    runs = [os.path.join(build, "mnist_out", n) for n in ("mnist_int8", "mnist_w4", "mnist_w4a8_qalora")]
    runs += [os.path.join(build, "fortunes_out", n) for n in ("rtn", "qalora")]
    runs = [r for r in runs if os.path.exists(os.path.join(r, "report.json"))]
    if not runs:
        pytest.skip("no MNIST or fortunes compiles under " + build + " (their tests were skipped)")
    pages = [check_run_page(r) for r in runs]
    check_threshold_drawn(runs[0])
    check_run_page(pruned_run())
    check_run_page(structured_run())

    # A laptop's screen: not blank; the first page's picture is the README's screenshot.
    shot = os.path.join(work, "page.png")
    chromium("--window-size=1366,768", f"--screenshot={shot}", "file://" + os.path.abspath(pages[0]))
    width, height, busy = png_not_blank(shot)
    print(f"screenshot {width}x{height}, {100 * busy:.1f}% non-zero filtered bytes")
    if screenshot:
        chromium("--window-size=1366,2400", f"--screenshot={screenshot}", "file://" + os.path.abspath(pages[0]))
        png_not_blank(screenshot)
        print("wrote " + screenshot)

    # Printed: A4 pages (595 x 842 points).
    pdf = os.path.join(work, "page.pdf")
    chromium(f"--print-to-pdf={pdf}", "--no-pdf-header-footer", "file://" + os.path.abspath(pages[0]))
    text = open(pdf, "rb").read().decode("latin-1")
    boxes = re.findall(r"/MediaBox \[0 0 ([\d.]+) ([\d.]+)\]", text)
    check(boxes and all(abs(float(w) - 595) < 2 and abs(float(h) - 842) < 2 for w, h in boxes), f"not A4: {boxes[:3]}")
    print(f"printed on {len(boxes)} A4 page(s)")

    # A sweep: one page comparing compiles of one model, a point per compile.
    same_model = [r for r in runs if "mnist_out" in r] or runs
    sweep = os.path.join(work, "sweep.html")
    subprocess.run([QFORGE, "report", *same_model, "-o", sweep], check=True, capture_output=True)
    marks = rendered(sweep)
    check(marks.marks.get("sweep") == len(same_model), f"sweep page: {marks.marks.get('sweep')} points for {len(same_model)} compiles")
    print(f"sweep page: {len(same_model)} points")
