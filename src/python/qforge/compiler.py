"""qforge.compile: clika_compile's call on a torch.nn.Module, run by the qforge engine on 1 process,
N processes (mpirun), a SLURM allocation (srun) or as a SLURM job (qforge submit)."""
import json
import os

import torch

from . import capture, engine
from .errors import ConfigError, ModelError
from .launch import Slurm, job_failure
from .result import CompiledModule, DryRunPlan
from .settings import Settings, settings_classes

__all__ = ["compile", "clika_compile"]


def _section(name, value, path):
    """A settings object or dict as the experiment's plain data (None stays None)."""
    if value is None:
        return None
    cls = settings_classes()[name]
    if isinstance(value, Settings):
        if not isinstance(value, cls):
            raise ConfigError(f"{path}: expected {cls.__name__}, got {type(value).__name__}")
        return value.to_dict(path)
    if isinstance(value, dict):
        return cls.from_dict(value, path).to_dict(path)
    raise ConfigError(f"{path}: expected {cls.__name__} or a dict, got {type(value).__name__}")


def _layer_settings(value):
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError("layer_quantization_settings: expected a mapping of layer names (or globs) to "
                          f"LayerQuantizationSettings, got {type(value).__name__}")
    return {k: _section("LayerQuantizationSettings", v, f"layer_quantization_settings[{k}]") for k, v in value.items()}


def _model_device(module_or_func):
    module = getattr(module_or_func, "__self__", module_or_func)
    for p in getattr(module, "parameters", lambda: [])():
        return p.device
    return torch.device("cpu")


def _casts(casts):
    """data_transform steps that give each input back the dtype HDF5 could not hold (bool, bfloat16)."""
    by_dtype = {}
    for name, dtype in casts.items():
        by_dtype.setdefault(dtype, []).append(name)
    return [{"op": "cast", "dtype": dtype, "inputs": names} for dtype, names in sorted(by_dtype.items())]


def _parameters(module_or_func):
    if isinstance(module_or_func, torch.jit.ScriptModule):
        schema = module_or_func.forward.schema
        return [a.name for a in schema.arguments[1:]]
    method = module_or_func if callable(module_or_func) and not isinstance(module_or_func, torch.nn.Module) \
        else type(module_or_func).forward
    names = capture.parameters_of(method)
    return names[1:] if names and names[0] == "self" else names


def compile(module_or_func, *, tracing_inputs=None, calibration_inputs=None, deployment_settings=None,
            data_transform_fn=None, forward_fn=None, quantization_settings=None, layer_quantization_settings=None,
            logs_dir=None, compile_options=None, discard_input_model=True, is_model_pretrained=True,
            is_dry_run=False, skip_eval_set_mode=False, graph_name=None, fullgraph=True, dynamic=True,
            disable=False, evaluation_inputs=None, out_dir=None, ranks=None, devices=None, launcher=None,
            capture_with="trace", progress=True, **extra_options):
    """Compiles `module_or_func` (a torch.nn.Module, a bound method such as model.infer, or a
    ScriptModule) as clika_compile does, every argument with its meaning there (docs/python.md).
    Samples (tracing_inputs, calibration_inputs, evaluation_inputs) are iterables of model inputs: a
    tensor, a tuple of tensors (optionally ending in a dict of keyword arguments) or a dict; a
    DataLoader's batches are split into rows. Beyond clika_compile: out_dir (the artifacts; default
    ./qforge-<graph name>), ranks / devices (processes: mpirun, or srun inside a SLURM allocation),
    launcher (qforge.Slurm(...): submit a job, returning its handle), capture_with ("trace" or
    "script"), progress (the engine's lines, fine-tuning as a tqdm bar where tqdm is installed; False:
    silent) and any other key of
    the experiment (seed=..., autocast=...). Returns the compiled module (qforge.CompiledModule) on the
    input's device, or with is_dry_run the plan (qforge.DryRunPlan)."""
    if disable:
        return module_or_func
    if quantization_settings is not None and (deployment_settings is None or calibration_inputs is None):
        missing = "deployment_settings" if deployment_settings is None else "calibration_inputs"
        raise ValueError(f"quantization_settings needs {missing} (clika_compile's rule)")
    experiment_fields = settings_classes()["ExperimentConfig"]._fields()
    for key in extra_options:
        if key not in experiment_fields:
            import difflib
            near = difflib.get_close_matches(key, list(experiment_fields), 1)
            raise ConfigError(f"{key}: not an argument of compile or a key of the experiment"
                              + (f"; did you mean '{near[0]}'?" if near else ""))
    experiment = {
        "deployment_settings": _section("DeploymentSettings", deployment_settings, "deployment_settings"),
        "quantization_settings": _section("QuantizationSettings", quantization_settings, "quantization_settings"),
        "layer_quantization_settings": _layer_settings(layer_quantization_settings),
        "compile_options": _section("CompileOptions", compile_options, "compile_options"),
    }
    experiment = {k: v for k, v in experiment.items() if v is not None}
    for key, value in extra_options.items():
        field = experiment_fields[key]
        experiment[key] = _section(field["section"]["class"], value, key) if "section" in field and \
            field["type"] == "section" else value

    module = getattr(module_or_func, "__self__", module_or_func)
    name = graph_name or type(module).__name__.lower()
    out_dir = os.path.abspath(out_dir or f"qforge-{name}")
    work = out_dir.rstrip("/") + ".inputs"
    os.makedirs(work, exist_ok=True)
    device = _model_device(module_or_func)
    scripted = isinstance(module_or_func, torch.jit.ScriptModule)
    was_training = getattr(module, "training", False)
    if not skip_eval_set_mode and hasattr(module, "eval"):
        module.eval()
    try:
        compiled = _run(module_or_func, module, scripted, work, out_dir, name, experiment, locals(), device)
    finally:
        if not discard_input_model and hasattr(module, "train"):
            module.train(was_training)
    return compiled


def _run(module_or_func, module, scripted, work, out_dir, name, experiment, a, device):
    parameters = _parameters(module_or_func)
    method = module_or_func if not isinstance(module_or_func, torch.nn.Module) else type(module).forward

    def structure_for(sample):
        return capture.structure_of(sample, parameters, capture.takes_one_dict(method, sample)
                                    if not scripted else isinstance(sample, dict) and len(parameters) == 1)

    calibration = None
    if a["calibration_inputs"] is not None:
        path = os.path.join(work, "calibration.h5")
        structure, casts, sizes, rows = capture.write_inputs(path, a["calibration_inputs"], structure_for,
                                                             a["data_transform_fn"], flat=not scripted)
        calibration = (structure, casts)
        experiment["calibration_inputs"] = {"files": [path], "batch_size": sizes[0]}
    tracing = a["tracing_inputs"]
    if tracing is not None:
        path = os.path.join(work, "tracing.h5")
        t_structure, t_casts, t_sizes, _ = capture.write_inputs(path, tracing, structure_for, a["data_transform_fn"],
                                                                flat=not scripted)
        if calibration and t_structure.key() != calibration[0].key():
            raise ModelError(f"tracing_inputs hold {t_structure.describe()}, calibration_inputs "
                             f"{calibration[0].describe()}: both are inputs of one method")
        experiment["tracing_inputs"] = {"files": [path], "batch_sizes": sorted(set(t_sizes))}
        example_structure, casts = t_structure, t_casts
    elif calibration:
        example_structure, casts = calibration
    else:
        raise ValueError("compile needs tracing_inputs or calibration_inputs to capture the model")
    if calibration:
        casts = dict(calibration[1], **casts)
    if a["evaluation_inputs"] is not None:
        path = os.path.join(work, "evaluation.h5")
        e_structure, e_casts, e_sizes, _ = capture.write_inputs(path, a["evaluation_inputs"], structure_for,
                                                                a["data_transform_fn"], flat=not scripted)
        casts.update(e_casts)
        experiment["evaluation_inputs"] = {"files": [path], "batch_size": e_sizes[0]}
    if casts:
        experiment["data_transform"] = _casts(casts)
    example = [t.to(device) for t in example_structure.tensors]
    script, method_name = capture.capture_model(module_or_func, example_structure, example, a["forward_fn"],
                                                a["capture_with"])
    model_path = os.path.join(work, "model.pt")
    script.save(model_path)
    if a["discard_input_model"]:
        del script  # the traced copy's tensors: the engine reads the file
    if a["devices"] is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in a["devices"])
        experiment.setdefault("device", "cuda")
    elif device.type == "cuda":
        experiment.setdefault("device", "cuda")
    experiment.update({
        "model": {"path": model_path, "method": method_name},
        "graph_name": name, "out_dir": out_dir, "logs_dir": os.path.abspath(a["logs_dir"]) if a["logs_dir"] else "",
        "discard_input_model": bool(a["discard_input_model"]), "is_model_pretrained": bool(a["is_model_pretrained"]),
        "skip_eval_set_mode": bool(a["skip_eval_set_mode"]), "fullgraph": bool(a["fullgraph"]),
        "dynamic": bool(a["dynamic"]),
    })
    launcher = a["launcher"]
    if isinstance(launcher, Slurm):
        experiment["resources"] = launcher.resources
    config = os.path.join(work, "experiment.yaml")
    with open(config, "w") as f:  # JSON is YAML
        json.dump(experiment, f, indent=1)
    ranks = len(a["devices"]) if a["devices"] is not None else a["ranks"]
    structure = None if scripted else example_structure
    if isinstance(launcher, Slurm):
        def finish(job):
            if not os.path.exists(os.path.join(out_dir, "report.json")):
                raise job_failure(job, out_dir)
            return _load(out_dir, structure, casts, device)
        return launcher.submit(config, finish)
    args = ["compile", config] + (["--dry-run"] if a["is_dry_run"] else [])
    text = engine.run(args, ranks=ranks, launcher=launcher, progress=a["progress"])
    if a["is_dry_run"]:
        with open(os.path.join(out_dir, "plan.json")) as f:
            return DryRunPlan(json.load(f), text)
    return _load(out_dir, structure, casts, device)


def _load(out_dir, structure, casts, device):
    script = torch.jit.load(os.path.join(out_dir, "model.qforge.pt"), map_location=device)
    return CompiledModule(script, out_dir, structure, casts).to(device)


def clika_compile(module_or_func, *, tracing_inputs=None, calibration_inputs=None, deployment_settings=None,
                  data_transform_fn=None, forward_fn=None, quantization_settings=None,
                  layer_quantization_settings=None, logs_dir=None, clika_compile_options=None,
                  discard_input_model=True, is_model_pretrained=True, is_dry_run=False, skip_eval_set_mode=False,
                  graph_name=None, fullgraph=True, dynamic=True, disable=False, **extra_options):
    """clika_compile's exact signature (clika_compile_options for compile_options): a CLIKA user changes
    one import. Runs qforge.compile."""
    return compile(module_or_func, tracing_inputs=tracing_inputs, calibration_inputs=calibration_inputs,
                   deployment_settings=deployment_settings, data_transform_fn=data_transform_fn,
                   forward_fn=forward_fn, quantization_settings=quantization_settings,
                   layer_quantization_settings=layer_quantization_settings, logs_dir=logs_dir,
                   compile_options=clika_compile_options, discard_input_model=discard_input_model,
                   is_model_pretrained=is_model_pretrained, is_dry_run=is_dry_run,
                   skip_eval_set_mode=skip_eval_set_mode, graph_name=graph_name, fullgraph=fullgraph,
                   dynamic=dynamic, disable=disable, **extra_options)
