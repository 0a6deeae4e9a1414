"""From the model and samples a user holds to what the engine reads: the samples' structure (a
tensor, a tuple, a dict, or positional arguments and keyword arguments), their tensors as rows in
HDF5 (streamed), and the model as TorchScript (traced, scripted, or taken as it is)."""
import inspect
import os
import traceback
import types

import numpy as np
import torch

from .data import SampleWriter
from .errors import DataError, ModelError

__all__ = ["Structure", "structure_of", "write_inputs", "capture_model"]

_STATIC = (bool, int, float, str, type(None))


class Structure:
    """How one sample is laid out: `names` of its tensors (in the order the engine passes them),
    how they are handed to the model (`form`: tensor, args, kwargs, dict), and the values that
    are not tensors (the same in every sample; they are part of the captured model)."""

    def __init__(self, form, names, positional=0, statics=None, parameters=None):
        self.form, self.names, self.positional = form, list(names), positional
        self.statics = dict(statics or {})
        self.parameters = parameters  # the method's positional parameter names

    def key(self):
        return (self.form, tuple(self.names), tuple(sorted(self.statics)))

    def describe(self):
        return {"tensor": "a tensor", "args": f"a tuple of {len(self.names)} tensors",
                "kwargs": "keyword arguments " + ", ".join(self.names),
                "dict": "a dict of " + ", ".join(self.names)}[self.form]

    def leaves(self, sample, index):
        """The sample's tensors in `names` order; DataError names the sample when it differs."""
        found = structure_of(sample, self.parameters, self.form == "dict", index)
        if found.key() != self.key():
            raise DataError(f"sample {index} is {found.describe()}, but sample 0 was {self.describe()}: every "
                            "sample must have the structure of the first")
        for k, v in found.statics.items():
            if v != self.statics[k]:
                raise DataError(f"sample {index}: '{k}' is {v!r}, sample 0 had {self.statics[k]!r}: values that "
                                "are not tensors must be the same in every sample (they are traced into the model)")
        return found.tensors

    def rebuild(self, tensors):
        """(args, kwargs) of a model call from the tensors in `names` order."""
        if self.form in ("tensor", "args"):
            return list(tensors[:self.positional]), dict(zip(self.names[self.positional:],
                                                             tensors[self.positional:]), **self.statics)
        mapping = dict(zip(self.names, tensors), **self.statics)
        if self.form == "dict":
            return [mapping], {}
        return [], mapping


def _tensor(x, where):
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise DataError(f"{where} is a {type(x).__name__}, not a tensor (samples hold tensors; other values must be "
                    "the same in every sample, as keyword arguments)")


def structure_of(sample, parameters, dict_argument, index=0):
    """The structure of one sample, given the method's parameter names (None: keep what is known)."""
    where = f"sample {index}"
    if isinstance(sample, (torch.Tensor, np.ndarray)):
        s = Structure("tensor", [(parameters or ["x"])[0]], positional=1, parameters=parameters)
        s.tensors = [_tensor(sample, where)]
        return s
    if isinstance(sample, dict):
        tensors, statics, names = [], {}, []
        for k, v in sample.items():
            if isinstance(v, _STATIC):
                statics[k] = v
            else:
                names.append(k)
                tensors.append(_tensor(v, f"{where}['{k}']"))
        s = Structure("dict" if dict_argument else "kwargs", names, statics=statics, parameters=parameters)
        s.tensors = tensors
        return s
    if isinstance(sample, (tuple, list)):
        items = list(sample)
        kwargs = items.pop() if items and isinstance(items[-1], dict) else {}
        names = [(parameters[i] if parameters and i < len(parameters) else f"input_{i}") for i in range(len(items))]
        tensors = [_tensor(v, f"{where}[{i}]") for i, v in enumerate(items)]
        statics = {}
        for k, v in kwargs.items():
            if isinstance(v, _STATIC):
                statics[k] = v
            else:
                names.append(k)
                tensors.append(_tensor(v, f"{where} keyword '{k}'"))
        s = Structure("args", names, positional=len(items), statics=statics, parameters=parameters)
        s.tensors = tensors
        return s
    raise DataError(f"{where} is a {type(sample).__name__}: a sample is a tensor, a tuple of tensors (positional "
                    "arguments, optionally ending in a dict of keyword arguments) or a dict of tensors")


def parameters_of(callable_):
    """Positional parameter names of the model's method (self excluded), for naming the inputs."""
    try:
        sig = inspect.signature(callable_)
    except (TypeError, ValueError):
        return []
    return [p.name for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def takes_one_dict(callable_, sample):
    """A dict sample is one Dict argument (forward(self, batch)) rather than keyword arguments when the
    method has one parameter that is not among the dict's keys."""
    params = parameters_of(callable_)
    if params and params[0] == "self":
        params = params[1:]
    return isinstance(sample, dict) and len(params) == 1 and params[0] not in sample


# --- rows to HDF5 -------------------------------------------------------------------------------

def _row_array(t, name, index):
    """A tensor as rows for HDF5 and the dtype the engine must cast it back to (None: as stored)."""
    t = t.detach()
    if t.dim() == 0:
        raise DataError(f"sample {index}: '{name}' is a 0-d tensor; samples are batches whose axis 0 is the row")
    cast = None
    if t.dtype == torch.bool:
        t, cast = t.to(torch.uint8), "bool"
    elif t.dtype == torch.bfloat16:
        t, cast = t.to(torch.float32), "bfloat16"
    elif t.dtype == torch.float16:
        cast = "float16"  # read back as float32 by the engine
    return t.cpu().numpy(), cast


def write_inputs(path, samples, structure_for, transform=None, limit=None, flat=True):
    """Streams `samples` (any iterable of model inputs) through `transform` into `path`, grouping
    rows by shape. Returns (structure, casts, batch sizes, rows). Memory holds one sample at a time.
    flat: the model takes the tensors positionally (a captured model), else as the samples hold them."""
    writer, structure, casts, batch_sizes = None, None, {}, []
    try:
        for index, sample in enumerate(samples):
            if transform is not None:
                sample = transform(sample)
            if structure is None:
                structure = structure_for(sample)
                tensors = structure.tensors
            else:
                tensors = structure.leaves(sample, index)
            arrays = []
            for name, t in zip(structure.names, tensors):
                a, cast = _row_array(t, name, index)
                if cast:
                    casts[name] = cast
                arrays.append(a)
            rows = {len(a) for a in arrays}
            if len(rows) != 1:
                raise DataError(f"sample {index}: its tensors have different batch sizes (axis 0): "
                                + ", ".join(f"{n} {len(a)}" for n, a in zip(structure.names, arrays)))
            if writer is None:
                kind = {"tensor": "tensor", "args": "tuple", "kwargs": "dict", "dict": "dict"}[structure.form]
                if flat:
                    kind = "tuple"
                if kind == "tuple" and len(structure.names) == 1:
                    kind = "tensor"
                writer = SampleWriter(path, kind, structure.names)
            writer.add(arrays)
            batch_sizes.append(len(arrays[0]))
            if limit and writer.rows >= limit:
                break
        if writer is None:
            raise DataError("no samples: the iterable gave nothing")
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abandon()
        raise
    return structure, casts, batch_sizes, writer.rows


# --- the model as TorchScript -------------------------------------------------------------------

def _where_in_user_code(error):
    frames = traceback.extract_tb(error.__traceback__)
    here = os.path.dirname(os.path.abspath(__file__))
    for frame in reversed(frames):
        if os.sep + "torch" + os.sep not in frame.filename and not frame.filename.startswith(here):
            return f"{frame.filename}:{frame.lineno} ({frame.line})"
    return ""


class _Call:
    """The model as forward_fn sees it: calling it runs the original method (not the patched one)."""

    def __init__(self, module, method):
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_method", method)

    def __call__(self, *args, **kwargs):
        return self._method(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._module, name)


def capture_model(module_or_func, structure, example, forward_fn=None, how="trace"):
    """(the model as a ScriptModule, its method name). A bound method (model.infer) or a forward_fn is
    captured by tracing the module with its forward standing in for them, so layer names stay the
    module's own. A ScriptModule is taken as it is."""
    if isinstance(module_or_func, torch.jit.ScriptModule):
        if forward_fn is not None:
            raise ModelError("forward_fn needs a Python module to trace; a ScriptModule is compiled as it is")
        return module_or_func, "forward"
    if isinstance(module_or_func, types.MethodType) and isinstance(module_or_func.__self__, torch.nn.Module):
        module, method = module_or_func.__self__, getattr(type(module_or_func.__self__), module_or_func.__name__)
    elif isinstance(module_or_func, torch.nn.Module):
        module, method = module_or_func, type(module_or_func).forward
    else:
        raise ModelError(f"module_or_func is a {type(module_or_func).__name__}: qforge compiles a torch.nn.Module, "
                         "a bound method of one (model.infer), or a torch.jit.ScriptModule")
    if how == "script":
        if forward_fn is not None or method is not type(module).forward:
            raise ModelError("capture_with='script' compiles the module's forward as written; trace it to use "
                             "forward_fn or another method")
        try:
            return torch.jit.script(module), "forward"
        except Exception as e:
            raise ModelError(f"torch.jit.script({type(module).__name__}) failed: {str(e).strip().splitlines()[0]} "
                             f"{_where_in_user_code(e)}; capture_with='trace' (the default) may take it") from None
    if how != "trace":
        raise ModelError(f"capture_with='{how}': trace or script")
    original = module.__dict__.get("forward")
    call = _Call(module, types.MethodType(method, module))

    def flat_forward(self, *tensors):
        # The tracer entered through this stand-in; the method runs with the module's own forward
        # back in place, so code calling self.forward (model.infer does) reaches the original.
        patched = module.__dict__.pop("forward")
        try:
            args, kwargs = structure.rebuild(list(tensors))
            if forward_fn is not None:
                return forward_fn(call, tuple(args), kwargs)
            return call(*args, **kwargs)
        finally:
            module.forward = patched

    module.forward = types.MethodType(flat_forward, module)
    try:
        with torch.no_grad():
            traced = torch.jit.trace(module, tuple(example), strict=False, check_trace=False)
    except Exception as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"tracing {type(module).__name__} failed: {message} {_where_in_user_code(e)}; "
                         "capture_with='script' compiles the code as written, or give a forward_fn that calls the model "
                         "with tensors") from None
    finally:
        module.__dict__.pop("forward", None)
        if original is not None:
            module.forward = original
    return traced, "forward"
