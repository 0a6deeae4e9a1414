"""Writes calibration HDF5 files in qforge's layout (README, "Calibration data").

    from qforge_h5 import write_samples
    write_samples("calib.h5", kind="tuple", input_names=["ids", "mask"],
                  groups={"len16": {"ids": ids16, "mask": mask16},
                          "len32": {"ids": ids32, "mask": mask32}},
                  labels={"len16": y16, "len32": y32})

Each group holds rows of one shape; axis 0 of every array is the row. FORMAT_VERSION is the
layout's version, stamped into every file as its `qforge_format` attribute; qforge reads the
same version (kSampleFormatVersion in src/data/sample_format.h, held equal by
tests/python/test_qforge_h5.py)."""
import h5py
import numpy as np

__all__ = ["FORMAT_VERSION", "INPUT_KINDS", "write_samples"]

FORMAT_VERSION = 1
INPUT_KINDS = ("tensor", "tuple", "dict")


def write_samples(path, kind, input_names, groups, labels=None, chunk_rows=64):
    """Writes `groups` (group name -> {input name -> array}) to a new file at `path`, with
    `labels` (group name -> array) where given. kind: tensor, tuple or dict; input_names: the
    inputs in order (the positional order of a tuple)."""
    if kind not in INPUT_KINDS:
        raise ValueError("kind must be tensor, tuple or dict")
    with h5py.File(path, "w") as f:
        f.attrs["qforge_format"] = FORMAT_VERSION
        f.attrs["input_kind"] = kind
        f.attrs["input_names"] = ",".join(input_names)
        samples = f.create_group("samples")
        for group_name, arrays in groups.items():
            g = samples.create_group(group_name)
            for name in input_names:
                a = np.asarray(arrays[name])
                # an empty axis (a decoder's past of length 0) cannot be chunked
                chunks = (min(chunk_rows, len(a)),) + a.shape[1:] if a.size else None
                g.create_dataset(name, data=a, chunks=chunks)
            if labels is not None and group_name in labels:
                g.create_dataset("labels", data=np.asarray(labels[group_name]))
