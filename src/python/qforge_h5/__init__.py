"""The calibration-file writer under its first name: `qforge.data` is its home now.

    from qforge_h5 import write_samples   # as before; same as: from qforge.data import write_samples"""
from qforge.data import FORMAT_VERSION, INPUT_KINDS, write_samples  # noqa: F401

__all__ = ["FORMAT_VERSION", "INPUT_KINDS", "write_samples"]
