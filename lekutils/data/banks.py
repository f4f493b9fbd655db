"""Component banks: YAML files under ``data/banks/`` read with line numbers and validated.

Every problem of a bank file is collected into one :class:`~lekutils.core.errors.DataError` naming the
file, the line and the field (a dotted path such as ``domains.education.stakeholders[3].role``).
Templates are checked for unknown placeholders, so a typo such as ``{orgg}`` fails at load time
rather than in the middle of a composed prompt.
"""

from __future__ import annotations

import os
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from lekutils.core.errors import DataError, Problem, read_text_file

PathLike = str | os.PathLike[str]

#: The bank files, in the order they are loaded.
BANK_FILES = ("names", "creative", "phase1", "rephrasings", "phase2", "phase3", "phase4")


def default_banks_dir() -> Path:
    """``data/banks`` of the repository this package lives in."""
    return Path(__file__).resolve().parents[2] / "data" / "banks"


class LineDict(dict):
    """A YAML mapping that remembers its line and each key's line (1-based)."""

    line: int = 0
    key_lines: dict[str, int]


class LineList(list):
    """A YAML sequence that remembers its line and each item's line (1-based)."""

    line: int = 0
    item_lines: list[int]


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    out = LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(n, deep=True) for n in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [n.start_mark.line + 1 for n in node.value]
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def placeholders(template: str) -> set[str]:
    """The ``{name}`` placeholders of a ``str.format`` template."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


class Checker:
    """Collects problems while walking one bank file; every check returns the value or ``None``."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self.problems: list[Problem] = []

    def fail(self, message: str, line: int | None, field: str) -> None:
        self.problems.append(Problem(message, line=line, field=field))

    def get(self, node: Any, key: str, kind: type | tuple[type, ...], where: str, *,
            optional: bool = False) -> Any:
        """``node[key]`` checked for type; a problem (and ``None``) when missing or mistyped."""
        field = f"{where}.{key}" if where else key
        line = getattr(node, "line", None)
        if not isinstance(node, dict):
            self.fail(f"expected a mapping, got {type(node).__name__}", line, where or "<top>")
            return None
        if key not in node or node[key] is None:
            if not optional:
                self.fail("missing (required)", line, field)
            return None
        value = node[key]
        line = getattr(node, "key_lines", {}).get(key, line)
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            self.fail(f"must be {_article(names)}, got {type(value).__name__}", line, field)
            return None
        if isinstance(value, (str, list, dict)) and not value:
            self.fail("is empty", line, field)
            return None
        return value

    def strings(self, node: Any, key: str, where: str, *, allowed: set[str] | None = None,
                required: set[str] = frozenset(), min_len: int = 1) -> list[str]:
        """A non-empty list of non-empty strings; templates checked against ``allowed``/``required``."""
        items = self.get(node, key, list, where)
        if items is None:
            return []
        field = f"{where}.{key}" if where else key
        out: list[str] = []
        for i, item in enumerate(items):
            line = items.item_lines[i] if isinstance(items, LineList) else None
            if not isinstance(item, str) or not item.strip():
                self.fail("must be a non-empty string", line, f"{field}[{i}]")
                continue
            self.template(item, line, f"{field}[{i}]", allowed, required)
            out.append(item)
        if len(items) < min_len:
            self.fail(f"needs at least {min_len} entries, has {len(items)}", getattr(items, "line", None), field)
        return out

    def template(self, text: str, line: int | None, field: str, allowed: set[str] | None,
                 required: set[str] = frozenset()) -> None:
        try:
            used = placeholders(text)
        except ValueError as e:
            self.fail(f"bad template: {e}", line, field)
            return
        if allowed is not None:
            unknown = sorted(u for u in used if u.lower() not in allowed)
            if unknown:
                self.fail(f"unknown placeholder(s) {unknown} (known: {sorted(allowed)})", line, field)
        missing = sorted(r for r in required if r not in {u.lower() for u in used})
        if missing:
            self.fail(f"template lacks placeholder(s) {missing}", line, field)

    def records(self, node: Any, key: str, where: str, fields: dict[str, type], *,
                min_len: int = 1, optional: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """A list of mappings each with the given typed ``fields`` (strings must be non-empty)."""
        items = self.get(node, key, list, where)
        if items is None:
            return []
        field = f"{where}.{key}" if where else key
        out = []
        for i, item in enumerate(items):
            before = len(self.problems)
            for name, kind in fields.items():
                self.get(item, name, kind, f"{field}[{i}]", optional=name in optional)
            if len(self.problems) == before:
                out.append(item)
        if len(items) < min_len:
            self.fail(f"needs at least {min_len} entries, has {len(items)}", getattr(items, "line", None), field)
        return out

    def unique(self, items: list[dict[str, Any]], key: str, field: str) -> None:
        seen: dict[Any, int] = {}
        for i, item in enumerate(items):
            value = item.get(key)
            if value in seen:
                self.fail(f"duplicate {key} {value!r} (also entry {seen[value]})", getattr(item, "line", None),
                          f"{field}[{i}].{key}")
            seen.setdefault(value, i)


def _article(name: str) -> str:
    return ("an " if name[:1] in "aeiou" else "a ") + name


def read_yaml(path: PathLike) -> Any:
    """Parse one YAML file with line numbers; a :class:`DataError` naming the line for bad YAML."""
    path = Path(path)
    text, _ = read_text_file(path, "bank file")
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        raise DataError(path, Problem(f"invalid YAML: {e.problem or e}", line=line, column=col)) from e
    except yaml.YAMLError as e:
        raise DataError(path, f"invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise DataError(path, Problem(f"expected a YAML mapping at the top, got {type(data).__name__}", line=1))
    return data


def load_bank(path: PathLike, validate: Callable[[Checker, dict[str, Any]], None]) -> dict[str, Any]:
    """Read one bank file and run ``validate`` on it; raise one DataError with all its problems."""
    data = read_yaml(path)
    check = Checker(path)
    check.get(data, "version", int, "")
    validate(check, data)
    if check.problems:
        raise DataError(path, check.problems)
    return data


def load_banks(banks_dir: PathLike | None = None,
               names: tuple[str, ...] = BANK_FILES) -> dict[str, dict[str, Any]]:
    """Load and validate the named bank files (``<banks_dir>/<name>.yaml``)."""
    from lekutils.data.bankschema import VALIDATORS

    banks_dir = Path(banks_dir) if banks_dir is not None else default_banks_dir()
    return {name: load_bank(banks_dir / f"{name}.yaml", VALIDATORS[name]) for name in names}
