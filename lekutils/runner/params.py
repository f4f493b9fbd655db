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

from lekutils.core.errors import DataError, ParameterError, Problem

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


class StrictLoader(yaml.SafeLoader):
    """A ``SafeLoader`` that refuses a key repeated in one mapping (YAML would keep the last
    silently: ``max_tokens: 64`` then ``max_tokens: 4096`` gives 4096), naming both lines."""

    duplicates: list[Problem]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                try:
                    key = self.construct_object(key_node, deep=True)
                    hash(key)
                except (TypeError, yaml.constructor.ConstructorError):
                    continue  # the base constructor reports unhashable keys
                line = key_node.start_mark.line + 1
                if key in seen:
                    self.duplicates.append(Problem(f"duplicate key {key!r} (first on line {seen[key]})",
                                                   line=line, column=key_node.start_mark.column + 1))
                else:
                    seen[key] = line
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_constructor("tag:yaml.org,2002:map", StrictLoader.construct_yaml_map)


def safe_load_strict(text: str, path: object) -> Any:
    """``yaml.safe_load`` that raises :class:`DataError` (file, line, column) on bad YAML and on
    repeated keys."""
    loader = StrictLoader(text)
    loader.duplicates = []
    try:
        doc = loader.get_single_data()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise DataError(path, Problem(f"invalid YAML: {getattr(e, 'problem', None) or e}",
                                      line=mark.line + 1 if mark else None,
                                      column=mark.column + 1 if mark else None)) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise DataError(path, sorted(loader.duplicates, key=lambda p: (p.line or 0, p.column or 0)))
    return doc


def load_yaml(path: Path) -> Any:
    """Read a YAML file; a one-line :class:`DataError` naming the file (and line, column) when it is
    missing, a directory, unreadable, not UTF-8, not valid YAML or repeats a key in a mapping."""
    path = Path(path)
    if path.is_dir():
        raise DataError(path, "expected a YAML file, found a directory")
    if not path.exists():
        raise DataError(path, "file not found")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(path, f"cannot read YAML file: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(path, Problem(f"not UTF-8 text (byte 0x{raw[e.start]:02x})", line=line, column=col)) from None
    return _fix_floats(safe_load_strict(text, path))


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
