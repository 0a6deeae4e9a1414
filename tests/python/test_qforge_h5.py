"""The calibration-file writer, src/python/qforge_h5, against what reads its files: the format
version qforge reads (kSampleFormatVersion, src/data/sample_format.h), the layout docs/data.md
documents ("Calibration data (HDF5)"), and qforge's version (CMakeLists.txt's project()).
Needs only h5py and numpy: `python3 -m pytest tests/python`; in ctest, qforge_h5_<case>."""
import os
import re
import sys

import h5py
import numpy as np
import pytest

SOURCE = os.environ.get("QFORGE_SOURCE_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(SOURCE, "src", "python"))  # the source tree's package, not an installed one
from qforge_h5 import FORMAT_VERSION, INPUT_KINDS, write_samples  # noqa: E402


def source_text(*parts):
    with open(os.path.join(SOURCE, *parts)) as f:
        return f.read()


def only_match(pattern, text, where):
    found = re.findall(pattern, text, re.M)
    assert len(found) == 1, f"{where}: {len(found)} matches of {pattern!r}, expected one"
    return found[0]


def test_format_version_is_the_one_qforge_reads():
    header = source_text("src", "data", "sample_format.h")
    cpp = int(only_match(r"^constexpr int64_t kSampleFormatVersion = (\d+);", header, "src/data/sample_format.h"))
    assert FORMAT_VERSION == cpp, f"qforge_h5.FORMAT_VERSION is {FORMAT_VERSION}, kSampleFormatVersion {cpp}"
    readme = int(only_match(r"attributes: qforge_format = (\d+)$", source_text("docs", "data.md"), "docs/data.md"))
    assert readme == FORMAT_VERSION, f"docs/data.md documents qforge_format = {readme}, the writer writes {FORMAT_VERSION}"


def test_package_version_is_qforges():
    cmake = only_match(r"^project\(qforge VERSION ([0-9.]+)", source_text("CMakeLists.txt"), "CMakeLists.txt")
    package = only_match(r'^version = "([0-9.]+)"$', source_text("src", "python", "pyproject.toml"), "pyproject.toml")
    assert package == cmake, f"src/python/pyproject.toml says {package}, CMakeLists.txt {cmake}"


def test_written_file_has_the_documented_layout(tmp_path):
    """docs/data.md: attributes qforge_format, input_kind and input_names (comma-separated, in order) on
    the root; /samples/<group>/<input name> per input, axis 0 the row; /samples/<group>/labels
    where given; a group holds rows of one shape."""
    rng = np.random.default_rng(0)
    names = ["input_ids", "attention_mask"]
    groups = {"len16": {"input_ids": rng.integers(0, 100, (5, 16)), "attention_mask": np.ones((5, 16), np.uint8)},
              "len64": {"input_ids": rng.integers(0, 100, (70, 64)), "attention_mask": np.ones((70, 64), np.uint8)}}
    labels = {"len16": np.arange(5, dtype=np.int64)}
    path = str(tmp_path / "calib.h5")
    write_samples(path, kind="dict", input_names=names, groups=groups, labels=labels)
    with h5py.File(path, "r") as f:
        assert sorted(f.attrs) == ["input_kind", "input_names", "qforge_format"]
        assert f.attrs["qforge_format"] == FORMAT_VERSION
        assert np.issubdtype(f.attrs["qforge_format"].dtype, np.integer), "qforge reads qforge_format as an integer"
        assert f.attrs["input_kind"] == "dict"
        assert f.attrs["input_names"] == "input_ids,attention_mask"
        assert list(f) == ["samples"]
        assert sorted(f["samples"]) == ["len16", "len64"]
        for group, arrays in groups.items():
            stored = f["samples"][group]
            assert sorted(stored) == sorted(names + (["labels"] if group in labels else []))
            for name, a in arrays.items():
                d = stored[name]
                assert d.shape == a.shape and d.dtype == a.dtype, f"{group}/{name}: {d.shape} {d.dtype}"
                np.testing.assert_array_equal(d[()], a)
                assert d.chunks == (min(64, len(a)),) + a.shape[1:], f"{group}/{name}: chunks {d.chunks} of whole rows"
        np.testing.assert_array_equal(f["samples/len16/labels"][()], labels["len16"])


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_every_input_kind_is_written_as_given(tmp_path, kind):
    names = ["x"] if kind == "tensor" else ["a", "b"]
    path = str(tmp_path / f"{kind}.h5")
    write_samples(path, kind, names, {"all": {n: np.zeros((3, 2), np.float32) for n in names}})
    with h5py.File(path, "r") as f:
        assert (f.attrs["input_kind"], f.attrs["input_names"]) == (kind, ",".join(names))
        assert "labels" not in f["samples/all"]


def test_an_unknown_kind_writes_nothing(tmp_path):
    path = tmp_path / "list.h5"
    with pytest.raises(ValueError, match="tensor, tuple or dict"):
        write_samples(str(path), "list", ["x"], {"all": {"x": np.zeros((2, 2))}})
    assert not path.exists()
