"""qforge from Python: clika_compile's call on the torch.nn.Module you hold, run by the qforge engine
on one process, N GPUs (mpirun) or a SLURM allocation (docs/python.md).

    import qforge
    compiled = qforge.compile(model, calibration_inputs=loader,
                              deployment_settings=qforge.OnnxRuntimeSettings(),
                              quantization_settings=qforge.QuantizationSettings())
    compiled(x); compiled.report; compiled.onnx_path

The settings classes (QuantizationSettings, LayerQuantizationSettings, CompileOptions, ...) are made
from the engine's schema when first used; qforge.data writes calibration files without the engine."""
import importlib

from .errors import (ConfigError, DataError, EngineNotFound, ExportError, LibraryError, ModelError,  # noqa: F401
                     OutputError, QforgeError, StoppedError, UsageError)

__version__ = "0.1.0"  # qforge's (CMakeLists.txt project()), as pyproject.toml says


def __getattr__(name):
    # Deferred, so `import qforge.data` needs neither torch nor the engine.
    # import_module, not `from . import`: that asks this function for the submodule first.
    if name in ("compile", "clika_compile"):
        return getattr(importlib.import_module("qforge.compiler"), name)
    if name in ("CompiledModule", "DryRunPlan"):
        return getattr(importlib.import_module("qforge.result"), name)
    if name in ("Slurm", "SlurmJob"):
        return getattr(importlib.import_module("qforge.launch"), name)
    if name in ("data", "settings", "engine", "capture", "errors", "compiler", "result", "launch"):
        return importlib.import_module("qforge." + name)
    settings = importlib.import_module("qforge.settings")
    if name == "Settings":
        return settings.Settings
    classes = dict(settings.settings_classes(), **settings.deployment_classes())
    if name in classes:
        return classes[name]
    raise AttributeError(f"module 'qforge' has no attribute '{name}'")


def __dir__():
    names = ["compile", "clika_compile", "CompiledModule", "DryRunPlan", "Slurm", "SlurmJob", "Settings", "data"]
    try:
        settings = importlib.import_module("qforge.settings")
        names += list(settings.settings_classes()) + list(settings.deployment_classes())
    except Exception:  # no engine: the classes come with it
        pass
    return sorted(set(globals()) | set(names))
