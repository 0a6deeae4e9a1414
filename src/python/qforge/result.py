"""What a compile gives back: the compiled model as a torch.nn.Module on the caller's device, called
as the input model was, with the run's report, its output directory and its ONNX file."""
import json
import os

import torch

from . import engine

__all__ = ["CompiledModule", "DryRunPlan"]


class CompiledModule(torch.nn.Module):
    """The compiled TorchScript model (`torchscript`, model.qforge.pt) behind the input model's call:
    the caller's arguments are flattened as the samples were (`structure`), so it is called as the
    input model was. `report` is report.json, `out_dir` the artifacts' directory, `onnx_path` the ONNX
    file (None when the target reads none); `export(target=...)` writes the model for another target."""

    def __init__(self, torchscript, out_dir, structure=None, casts=None, method="forward"):
        super().__init__()
        self.torchscript = torchscript
        self.out_dir = os.path.abspath(out_dir)
        with open(os.path.join(out_dir, "report.json")) as f:
            self.report = json.load(f)
        onnx = os.path.join(out_dir, "model.qforge.onnx")
        self.onnx_path = onnx if os.path.exists(onnx) else None
        self._structure, self._casts, self._method = structure, dict(casts or {}), method

    def forward(self, *args, **kwargs):
        if self._structure is None:  # a ScriptModule compiled as it is: called as it was
            return getattr(self.torchscript, self._method)(*args, **kwargs)
        sample = args[0] if len(args) == 1 and not kwargs else (tuple(args) + ((kwargs,) if kwargs else ()))
        if self._structure.form == "kwargs" and not args:
            sample = kwargs
        tensors = self._structure.leaves(sample, 0)
        return self.torchscript(*tensors)

    def export(self, target=None, opset=None, float_model=False, output=None, progress=False):
        """Writes the compiled model as ONNX again (`qforge export`), for `target` (default: the
        compile's) or without quantizers (`float_model`); returns the file's path."""
        output = os.path.abspath(output or os.path.join(self.out_dir, f"model.{target or 'qforge'}.onnx"))
        args = ["export", self.out_dir, "-o", output]
        if target:
            args += ["--target", target]
        if opset:
            args += ["--opset", str(opset)]
        if float_model:
            args.append("--float")
        engine.run(args, progress=progress)
        return output


class DryRunPlan(dict):
    """plan.json of a dry run (is_dry_run=True): layers and their decisions, the data's shards, the
    dynamic axes and the memory estimate; `text` is the plan as the engine printed it."""

    def __init__(self, plan, text):
        super().__init__(plan)
        self.text = text

    @property
    def layers(self):
        return self.get("layers", [])
