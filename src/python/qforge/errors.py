"""The engine's exit codes as exceptions (docs/exit-codes.md), each carrying the engine's message."""

__all__ = ["QforgeError", "UsageError", "ConfigError", "DataError", "ModelError", "LibraryError", "ExportError",
           "OutputError", "StoppedError", "EngineNotFound", "error_for_exit"]


class QforgeError(RuntimeError):
    """A compile that failed; `exit_code` is the engine's, `message` its words (the log is in `log`)."""

    exit_code = 1

    def __init__(self, message, exit_code=None, log=""):
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code
        self.log = log


class UsageError(QforgeError):
    exit_code = 2


class ConfigError(QforgeError, ValueError):
    """A setting the engine refuses (exit 3): the message names its YAML key."""
    exit_code = 3


class DataError(QforgeError):
    """Calibration or evaluation data the engine refuses (exit 4): the message names the file and sample."""
    exit_code = 4


class ModelError(QforgeError):
    """A model that does not load or does not fit its data (exit 5): the message names the layer or argument."""
    exit_code = 5


class LibraryError(QforgeError):
    """MPI, HDF5, NCCL or CUDA failed, or a rank stopped answering (exit 6)."""
    exit_code = 6


class ExportError(QforgeError):
    """The compiled model cannot be written for the target (exit 7): an op, a rule, an opset."""
    exit_code = 7


class OutputError(QforgeError):
    """The output directory cannot be used (exit 8): not writable, full, or held by another compile."""
    exit_code = 8


class StoppedError(QforgeError):
    """Stopped by a signal during fine-tuning with a checkpoint written (exit 75): compile again to resume."""
    exit_code = 75


class EngineNotFound(QforgeError):
    """No qforge executable (or no MPI launcher) where one was looked for."""
    exit_code = 127


_BY_CODE = {c.exit_code: c for c in (UsageError, ConfigError, DataError, ModelError, LibraryError, ExportError,
                                     OutputError, StoppedError)}


def error_for_exit(code, message, log=""):
    """The exception for the engine's exit `code`."""
    cls = _BY_CODE.get(code, QforgeError)
    return cls(message, code, log)
