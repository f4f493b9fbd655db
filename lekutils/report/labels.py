"""Report labels: display names and grouping of models, and probe-set names of result files.

Read from ``params/models.yaml`` (``models``: id, display, family, version, size, size_b, tuned,
base, match; ``probe_sets``: file glob -> set name).
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

from lekutils.core.errors import DataError, Problem
from lekutils.core.paths import REPO_ROOT
from lekutils.core.yamlfile import read_yaml_file


@dataclass
class ModelLabel:
    """How the report labels one model: display name, family, size, tuned/base (a row of ``params/models.yaml``).

    A display mapping for tables and figures, not a model description (see ``lekutils.engine.models``).
    """

    id: str
    display: str
    family: str = "unknown"
    version: str = ""
    size: str = ""
    size_b: float = float("nan")
    tuned: bool = False
    base: str | None = None
    match: list[str] = field(default_factory=list)


@dataclass
class LabelTable:
    """Maps model ids / file names to :class:`ModelLabel`s and file names to probe-set names."""

    models: list[ModelLabel] = field(default_factory=list)
    probe_sets: list[tuple[str, str]] = field(default_factory=list)  # (file glob, set name)

    def lookup(self, model_id: str, file_stem: str = "") -> ModelLabel:
        """The entry whose id or ``match`` list names ``model_id``, its basename or the file stem."""
        keys = {model_id, model_id.rstrip("/").rsplit("/", 1)[-1], file_stem}
        if model_id.startswith("openai:"):  # a remote model: also its name as served
            name = model_id.removeprefix("openai:").partition("@")[0]
            keys |= {name, name.rstrip("/").rsplit("/", 1)[-1]}
        for m in self.models:
            if keys & ({m.id, *m.match} - {""}):
                return m
        short = (model_id.partition("@")[0] if model_id.startswith("openai:") else model_id)
        short = short.rstrip("/").rsplit("/", 1)[-1] or file_stem
        return ModelLabel(id=model_id, display=short)

    def by_id(self, model_id: str) -> ModelLabel | None:
        return next((m for m in self.models if m.id == model_id), None)

    def probe_set_for(self, file_name: str) -> str | None:
        for pattern, name in self.probe_sets:
            if fnmatch.fnmatch(file_name, pattern):
                return name
        return None


def load_models(path: str | os.PathLike[str] | None = None) -> LabelTable:
    """Read the model labels and probe sets (default ``params/models.yaml``); errors name the entry and field."""
    path = Path(path) if path is not None else REPO_ROOT / "params" / "models.yaml"
    doc = read_yaml_file(path, "model label file") or {}
    problems: list[Problem] = []
    models: list[ModelLabel] = []
    for i, entry in enumerate(doc.get("models") or []):
        if not isinstance(entry, dict) or not entry.get("id") or not entry.get("display"):
            problems.append(Problem(f"models[{i}] needs 'id' and 'display'", field=f"models[{i}]"))
            continue
        try:
            models.append(
                ModelLabel(
                    id=str(entry["id"]),
                    display=str(entry["display"]),
                    family=str(entry.get("family", "unknown")),
                    version=str(entry.get("version", "")),
                    size=str(entry.get("size", "")),
                    size_b=float(entry.get("size_b", float("nan"))),
                    tuned=bool(entry.get("tuned", False)),
                    base=entry.get("base"),
                    match=[str(x) for x in entry.get("match") or []],
                )
            )
        except (TypeError, ValueError) as e:
            problems.append(Problem(str(e), field=f"models[{i}]"))
    sets: list[tuple[str, str]] = []
    for i, entry in enumerate(doc.get("probe_sets") or []):
        if not isinstance(entry, dict) or "file" not in entry or "name" not in entry:
            problems.append(Problem("needs 'file' (a glob) and 'name'", field=f"probe_sets[{i}]"))
            continue
        sets.append((str(entry["file"]), str(entry["name"])))
    if problems:
        raise DataError(path, problems)
    return LabelTable(models, sets)
