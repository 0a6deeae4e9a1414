"""Settings classes made from the engine's own schema (`qforge config schema`): one class per
section of the YAML experiment, named after its C++ struct (QuantizationSettings,
LayerQuantizationSettings, CompileOptions, FineTuneSettings, GptqSettings, ...), with each key's
default and meaning. A key added to the C++ schema appears here without a second list. Plain dicts
are accepted wherever a settings object is.

    qs = qforge.QuantizationSettings(weights=qforge.WeightQuantSettings(bits=4, granularity="group"))
    qs.weights.group_size = 64
    qs.to_dict()  # what goes into the YAML experiment"""
import copy
import difflib
import json
import os
import subprocess

from . import engine
from .errors import ConfigError, EngineNotFound

__all__ = ["Settings", "schema", "settings_classes", "deployment_classes"]

_schema = None


def _cache_path(binary):
    stat = os.stat(binary)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "qforge", f"schema-{stat.st_size}-{int(stat.st_mtime)}.json")


def schema():
    """The engine's schema (cached per executable, so an import costs no engine start)."""
    global _schema
    if _schema is None:
        binary = engine.executable()
        path = _cache_path(binary)
        try:
            with open(path) as f:
                _schema = json.load(f)
        except (OSError, ValueError):
            p = subprocess.run([binary, "config", "schema"], capture_output=True, text=True)
            if p.returncode != 0:
                raise EngineNotFound(f"{binary} config schema failed: {p.stderr.strip()[-500:]}")
            _schema = json.loads(p.stdout)
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path + ".tmp", "w") as f:
                    f.write(p.stdout)
                os.replace(path + ".tmp", path)
            except OSError:
                pass  # a read-only home: the schema is read again next time
    return _schema


def _type_error(path, field, value):
    expected = field["type"] if field["type"] != "enum" else "one of " + ", ".join(field["choices"])
    return ConfigError(f"{path}: expected {expected}, got {type(value).__name__} {value!r}")


def _check_scalar(path, field, kind, value):
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind == "enum":
        ok = isinstance(value, str) and value in field["choices"]
    else:
        ok = isinstance(value, str)
    if not ok:
        raise _type_error(path, field, value)
    return float(value) if kind == "float" else value


class Settings:
    """A section of the experiment: attributes are its keys. Unknown keys are errors naming the
    nearest valid one; values are checked against the schema's types when written out."""

    _section = {"class": "Settings", "fields": []}

    def __init__(self, **values):
        object.__setattr__(self, "_set", set())  # keys given: only these are written (presets fill the rest)
        for field in self._section["fields"]:
            object.__setattr__(self, field["name"], _default(field))
        for key, value in values.items():
            setattr(self, key, value)

    @classmethod
    def _fields(cls):
        return {f["name"]: f for f in cls._section["fields"]}

    def __setattr__(self, key, value):
        fields = self._fields()
        if key not in fields:
            near = difflib.get_close_matches(key, list(fields), 1)
            raise AttributeError(f"{type(self).__name__} has no setting '{key}'"
                                 + (f"; did you mean '{near[0]}'?" if near else f"; it has {', '.join(fields)}"))
        object.__setattr__(self, key, value)
        self._set.add(key)

    def __repr__(self):
        changed = [f"{f['name']}={getattr(self, f['name'])!r}" for f in self._section["fields"]
                   if _plain(getattr(self, f["name"]), "") != f["default"]]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __eq__(self, other):
        return type(self) is type(other) and self.to_dict(defaults=True) == other.to_dict(defaults=True)

    def to_dict(self, path="", defaults=False):
        """The section as the YAML experiment holds it, every value checked (ConfigError names the key):
        the keys given, and sections holding any (with `defaults`, every key). Keys left out take the
        engine's defaults, and the deployment preset's for quantization settings."""
        out = {}
        for field in self._section["fields"]:
            key = f"{path}.{field['name']}" if path else field["name"]
            value = getattr(self, field["name"])
            if defaults or field["name"] in self._set:
                out[field["name"]] = _to_plain(key, field, value, defaults)
            elif isinstance(value, Settings):
                nested = value.to_dict(key, defaults)
                if nested:
                    out[field["name"]] = nested
        return out

    @classmethod
    def from_dict(cls, values, path=""):
        obj = cls()
        fields = cls._fields()
        for key, value in (values or {}).items():
            if key not in fields:
                near = difflib.get_close_matches(key, list(fields), 1)
                raise ConfigError(f"{path + '.' if path else ''}{key}: not a setting of {cls.__name__}"
                                  + (f"; did you mean '{near[0]}'?" if near else ""))
            setattr(obj, key, value)
        return obj


def _plain(value, path):
    """A settings value as plain data, unchecked (for repr)."""
    if isinstance(value, Settings):
        return {f["name"]: _plain(getattr(value, f["name"]), path) for f in value._section["fields"]}
    if isinstance(value, dict):
        return {k: _plain(v, path) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, path) for v in value]
    return value


def _section_class(section):
    return settings_classes()[section["class"]]


def _default(field):
    value = copy.deepcopy(field["default"])
    if field["type"] == "section" and value is not None:
        return _defaults(_section_class(field["section"]), value)
    if field["type"] == "section_map":
        return {k: _defaults(_section_class(field["section"]), v) for k, v in value.items()}
    if field["type"] == "sections":
        return [_defaults(_section_class(field["section"]), v) for v in value]
    return value


def _defaults(cls, values):
    """A section holding default values, none of them counted as given."""
    obj = cls()
    for f in cls._section["fields"]:
        if f["name"] in values:
            object.__setattr__(obj, f["name"], _default(dict(f, default=values[f["name"]])))
    return obj


def _to_plain(path, field, value, defaults=False):
    if value is None:
        if not field["nullable"]:
            raise ConfigError(f"{path}: may not be None")
        return None
    kind = field["type"]
    if kind == "section":
        cls = _section_class(field["section"])
        obj = value if isinstance(value, cls) else cls.from_dict(_as_dict(path, value, cls), path)
        return obj.to_dict(path, defaults)
    if kind == "section_map":
        cls = _section_class(field["section"])
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping of names to {cls.__name__}, got {type(value).__name__}")
        return {k: (v if isinstance(v, cls) else cls.from_dict(_as_dict(f"{path}[{k}]", v, cls), f"{path}[{k}]"))
                .to_dict(f"{path}[{k}]", defaults) for k, v in value.items()}
    if kind == "sections":
        cls = _section_class(field["section"])
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list of {cls.__name__}, got {type(value).__name__}")
        return [(v if isinstance(v, cls) else cls.from_dict(_as_dict(f"{path}[{i}]", v, cls), f"{path}[{i}]"))
                .to_dict(f"{path}[{i}]", defaults) for i, v in enumerate(value)]
    if kind == "list":
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            value = [value]
        return [_check_scalar(f"{path}[{i}]", field, field["item"], v) for i, v in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise _type_error(path, field, value)
        return {str(k): str(v) for k, v in value.items()}
    return _check_scalar(path, field, kind, value)


def _as_dict(path, value, cls):
    if isinstance(value, Settings):
        raise ConfigError(f"{path}: expected {cls.__name__}, got {type(value).__name__}")
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected {cls.__name__} or a dict, got {type(value).__name__} {value!r}")
    return value


_classes = None


def settings_classes():
    """{class name: Settings subclass} for every section of the schema."""
    global _classes
    if _classes is None:
        classes = {}

        def visit(section):
            name = section["class"]
            if name not in classes:
                doc = "\n".join(f"    {f['name']} ({f['type']}, default {f['default']!r}): {f['doc']}"
                                for f in section["fields"])
                classes[name] = type(name, (Settings,), {"_section": section,
                                                         "__doc__": f"{name}, a section of the experiment:\n{doc}",
                                                         "__module__": "qforge"})
            for f in section["fields"]:
                if "section" in f:
                    visit(f["section"])

        visit(schema())
        _classes = classes
    return _classes


_TARGETS = {"TensorRTSettings": "tensorrt", "OnnxRuntimeSettings": "onnxruntime", "OpenVinoSettings": "openvino",
            "TensorRTLLMSettings": "tensorrt_llm", "LibTorchSettings": "libtorch"}


def deployment_classes():
    """One DeploymentSettings class per target, its target fixed: TensorRTSettings, ..."""
    base = settings_classes()["DeploymentSettings"]
    out = {}
    for name, target in _TARGETS.items():
        def __init__(self, _target=target, **values):
            base.__init__(self, **values)
            self.target = _target
        out[name] = type(name, (base,), {"__init__": __init__, "__module__": "qforge",
                                         "__doc__": f"Deployment to {target}: {base.__doc__}"})
    return out
