"""Writes calibration HDF5 files in qforge's layout (README, "Calibration data").

    write_samples("calib.h5", kind="tuple", input_names=["ids", "mask"],
                  groups={"len16": {"ids": ids16, "mask": mask16},
                          "len32": {"ids": ids32, "mask": mask32}},
                  labels={"len16": y16, "len32": y32})

Each group holds rows of one shape; axis 0 of every array is the row.
"""
import h5py
import numpy as np

FORMAT_VERSION = 1


def write_samples(path, kind, input_names, groups, labels=None, chunk_rows=64):
    if kind not in ("tensor", "tuple", "dict"):
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
                g.create_dataset(name, data=a, chunks=(min(chunk_rows, len(a)),) + a.shape[1:])
            if labels is not None and group_name in labels:
                g.create_dataset("labels", data=np.asarray(labels[group_name]))
