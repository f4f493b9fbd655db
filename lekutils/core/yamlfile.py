"""YAML input files read strictly: a key repeated in one mapping is refused (YAML keeps the last
silently), and every problem -- missing, directory, unreadable, not UTF-8, invalid YAML -- is a
:class:`~lekutils.core.errors.DataError` naming the file (and line, column)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from lekutils.core.errors import DataError, Problem


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


def read_yaml_file(path: str | os.PathLike[str], what: str = "YAML file") -> Any:
    """The value of a UTF-8 YAML file, read with :class:`StrictLoader`; :class:`DataError` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise DataError(path, f"expected a {what}, found a directory")
    if not path.exists():
        raise DataError(path, "file not found")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(path, f"cannot read {what}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(path, Problem(f"not UTF-8 text (byte 0x{raw[e.start]:02x})", line=line, column=col)) from None
    return safe_load_strict(text, path)
