"""Calibration data in qforge's HDF5 layout (docs/data.md), from NumPy arrays or streamed from any
iterable of model inputs (a list, a generator, a DataLoader's batches), one chunk at a time.

    from qforge.data import write_samples
    write_samples("calib.h5", kind="dict", input_names=["input_ids", "attention_mask"],
                  groups={"len16": {"input_ids": ids16, "attention_mask": mask16}})

    with SampleWriter("calib.h5", structure) as w:   # rows of each shape go to a group of their own
        for batch in loader:
            w.add(structure.leaves(batch))

FORMAT_VERSION is the layout's version, stamped into every file as its `qforge_format` attribute;
qforge reads the same version (kSampleFormatVersion in src/data/sample_format.h, held equal by
tests/python/test_qforge_h5.py)."""
import os

import h5py
import numpy as np

__all__ = ["FORMAT_VERSION", "INPUT_KINDS", "write_samples", "SampleWriter"]

FORMAT_VERSION = 1
INPUT_KINDS = ("tensor", "tuple", "dict")


def _write_header(f, kind, input_names):
    if kind not in INPUT_KINDS:
        raise ValueError("kind must be tensor, tuple or dict")
    f.attrs["qforge_format"] = FORMAT_VERSION
    f.attrs["input_kind"] = kind
    f.attrs["input_names"] = ",".join(input_names)


def write_samples(path, kind, input_names, groups, labels=None, chunk_rows=64):
    """Writes `groups` (group name -> {input name -> array}) to a new file at `path`, with
    `labels` (group name -> array) where given. kind: tensor, tuple or dict; input_names: the
    inputs in order (the positional order of a tuple). A group's "labels" entry is its labels too."""
    if kind not in INPUT_KINDS:  # before the file is made: a refused call writes nothing
        raise ValueError("kind must be tensor, tuple or dict")
    with h5py.File(path, "w") as f:
        _write_header(f, kind, input_names)
        samples = f.create_group("samples")
        for group_name, arrays in groups.items():
            g = samples.create_group(group_name)
            unknown = sorted(set(arrays) - set(input_names) - {"labels"})
            if unknown:
                raise ValueError(f"group {group_name}: {unknown} are not among the inputs {input_names} "
                                 "(labels go in `labels` or under the key 'labels')")
            for name in input_names:
                a = np.asarray(arrays[name])
                # an empty axis (a decoder's past of length 0) cannot be chunked
                chunks = (min(chunk_rows, len(a)),) + a.shape[1:] if a.size else None
                g.create_dataset(name, data=a, chunks=chunks)
            group_labels = labels.get(group_name) if labels else None
            if group_labels is None and "labels" in arrays:
                group_labels = arrays["labels"]
            if group_labels is not None:
                g.create_dataset("labels", data=_labels_array(group_name, group_labels))


def _labels_array(group, labels):
    a = np.asarray(labels)
    if a.dtype.kind == "f":
        if not np.all(a == np.round(a)):
            raise ValueError(f"group {group}: labels must be class indices (integers); these are fractional floats")
        a = a.astype(np.int64)
    return a


class SampleWriter:
    """Appends rows to a new HDF5 file in qforge's layout: each call of add() takes one batch (a list
    of arrays, one per input, axis 0 the row), and its rows go to the group of their shape. Only the
    batch at hand is in memory; datasets grow in chunks."""

    def __init__(self, path, kind, input_names, chunk_rows=64):
        self.path, self.kind, self.input_names, self.chunk_rows = path, kind, list(input_names), chunk_rows
        if kind not in INPUT_KINDS:
            raise ValueError("kind must be tensor, tuple or dict")
        self._tmp = path + ".partial"
        self._file = h5py.File(self._tmp, "w")
        _write_header(self._file, kind, input_names)
        self._samples = self._file.create_group("samples")
        self._groups = {}  # row shapes -> group name
        self.rows = 0

    def group_of(self, arrays):
        shapes = tuple(a.shape[1:] for a in arrays)
        name = self._groups.get(shapes)
        if name is None:
            first = "x".join(str(d) for d in shapes[0]) or "scalar"
            name = f"g{len(self._groups):03d}_{first}"
            self._groups[shapes] = name
            g = self._samples.create_group(name)
            for input_name, a in zip(self.input_names, arrays):
                chunks = (self.chunk_rows,) + a.shape[1:] if all(d > 0 for d in a.shape[1:]) else None
                g.create_dataset(input_name, shape=(0,) + a.shape[1:], maxshape=(None,) + a.shape[1:],
                                 dtype=a.dtype, chunks=chunks)
        return self._samples[name]

    def add(self, arrays):
        arrays = [np.asarray(a) for a in arrays]
        rows = len(arrays[0])
        g = self.group_of(arrays)
        for input_name, a in zip(self.input_names, arrays):
            d = g[input_name]
            if d.dtype != a.dtype:
                raise ValueError(f"input '{input_name}': dtype {a.dtype}, earlier rows of this shape {d.dtype}")
            start = d.shape[0]
            d.resize(start + rows, axis=0)
            d[start:] = a
        self.rows += rows

    def close(self):
        """Finishes the file: renamed into place only when complete."""
        if self._file is None:
            return
        self._file.close()
        self._file = None
        os.replace(self._tmp, self.path)

    def abandon(self):
        if self._file is not None:
            self._file.close()
            self._file = None
        if os.path.exists(self._tmp):
            os.remove(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is None:
            self.close()
        else:
            self.abandon()
