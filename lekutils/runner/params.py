"""Notebook parameters: the ``parameters`` cell's declarations, YAML files, ``-p`` values and their checks.

Parameters are checked against the notebook's ``parameters`` cell (names, and types inferred from
the annotation or the default) before anything runs: Papermill itself only warns on unknown names.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lekutils.core.errors import DataError, ParameterError
from lekutils.core.yamlfile import read_yaml_file

_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a notebook's ``parameters`` cell."""

    name: str
    type: type | None  # None: unknown (default None and no annotation) -> anything goes
    default: Any
    nullable: bool = False
    help: str = ""


def parse_value(text: str) -> Any:
    """Parse a ``-p key=value`` string: YAML scalars/lists/maps, with ``1e-5`` read as a float."""
    if _FLOAT_RE.match(text.strip()) and not text.strip().lstrip("+-").isdigit():
        return float(text)
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def _fix_floats(obj: Any) -> Any:
    """YAML 1.1 reads ``1e-5`` as a string; turn such strings into floats (recursively)."""
    if isinstance(obj, str) and _FLOAT_RE.match(obj) and ("e" in obj.lower()):
        return float(obj)
    if isinstance(obj, dict):
        return {k: _fix_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fix_floats(v) for v in obj]
    return obj


def load_yaml(path: Path) -> Any:
    """Read a YAML file; a one-line :class:`DataError` naming the file (and line, column) when it is
    missing, a directory, unreadable, not UTF-8, not valid YAML or repeats a key in a mapping."""
    return _fix_floats(read_yaml_file(path))


def _type_of(annotation: str, default_src: str) -> tuple[type | None, bool]:
    ann = (annotation or "None").replace("typing.", "").replace("Optional[", "").rstrip("]")
    nullable = "None" in ann.split("|")[1:] or "Optional" in (annotation or "") or default_src.strip() == "None"
    base = ann.split("|")[0].strip().split("[")[0]
    if base in _TYPES:
        return _TYPES[base], nullable
    try:
        value = ast.literal_eval(default_src)
    except (ValueError, SyntaxError):
        return None, nullable
    if value is None:
        return None, True
    return type(value) if type(value) in _TYPES.values() else None, nullable


def notebook_parameters(path: str | os.PathLike[str]) -> dict[str, ParamSpec]:
    """The parameters a notebook declares in its ``parameters`` cell, with inferred types."""
    import nbformat
    from papermill.translators import PythonTranslator

    nb = nbformat.read(str(path), as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise DataError(path, f"expected exactly one cell tagged 'parameters', found {len(tagged)}")
    specs = {}
    for p in PythonTranslator.inspect(tagged[0]):
        typ, nullable = _type_of(p.inferred_type_name, p.default)
        try:
            default = ast.literal_eval(p.default)
        except (ValueError, SyntaxError):
            default = p.default
        specs[p.name] = ParamSpec(p.name, typ, default, nullable, p.help)
    return specs


def check_value(spec: ParamSpec, value: Any) -> str | None:
    """Return a message if ``value`` does not fit ``spec``, else None."""
    if value is None:
        return None if spec.nullable or spec.type is None else f"'{spec.name}' may not be null"
    if spec.type is None:
        return None
    ok = isinstance(value, spec.type) and not (spec.type is int and isinstance(value, bool))
    if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        return (f"'{spec.name}' must be {spec.type.__name__} (default {spec.default!r}), "
                f"got {type(value).__name__} {value!r}")
    return None


def coerce(spec: ParamSpec, value: Any) -> Any:
    """Int values for float parameters become floats (so papermill writes ``1.0`` not ``1``)."""
    if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["k=v", ...]`` -> dict with values parsed by :func:`parse_value`."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParameterError("-p", [f"expected key=value, got '{item}'"])
        out[key.strip()] = parse_value(value)
    return out
