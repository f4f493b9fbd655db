"""The curriculum table of a profile: ``params/<profile>/curriculum.yaml``.

One table holds what differs per phase for both notebooks that run once per phase::

    defaults:            # applied to every phase
      distill: {...}     # parameters of notebooks/10_self_distill.ipynb
      train: {...}       # parameters of notebooks/20_train_phase.ipynb
    phases:
      - phase: 0
        title: creative baseline lock
        distill: {...}
        train: {...}
      - phase: 1
        ...

A pipeline execution with ``phase: K`` gets its parameters as: notebook default <
``defaults[section]`` < ``phases[K][section]`` < the execution's ``params`` file (optional) <
``-f`` < ``-p``, where the section is fixed by the notebook (:data:`SECTIONS`); the notebook
parameter ``phase`` is set to K. This module loads and validates the table's shape (errors name
file, line and field); the runner checks the keys against the notebook's parameters cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lekutils.core.errors import DataError, Problem

CURRICULUM_FILE = "curriculum.yaml"
#: Notebook (stem) -> the curriculum section holding its parameters.
SECTIONS: dict[str, str] = {"10_self_distill": "distill", "20_train_phase": "train"}
_TOP_KEYS = ("defaults", "phases")
_ROW_KEYS = ("phase", "title", *SECTIONS.values())


@dataclass
class Curriculum:
    """A loaded, shape-checked curriculum table."""

    path: Path
    defaults: dict[str, dict[str, Any]]
    phases: dict[int, dict[str, Any]]  # phase -> row (title and sections)

    def title(self, phase: int) -> str:
        return str(self.phases[phase].get("title", ""))

    def layers(self, section: str, phase: int) -> list[tuple[str, dict[str, Any]]]:
        """``[(origin, parameters), ...]`` lowest first: the section's defaults, then the phase's row
        (which also sets ``phase``)."""
        if phase not in self.phases:
            raise DataError(self.path, Problem(f"no row for phase {phase} (phases: "
                                               f"{', '.join(map(str, sorted(self.phases)))})", field="phases"))
        return [(f"{self.path} defaults.{section}", dict(self.defaults.get(section) or {})),
                (f"{self.path} phases[{phase}].{section}",
                 {**(self.phases[phase].get(section) or {}), "phase": phase})]


def section_for(notebook: str | Path) -> str:
    """The curriculum section of a notebook; a DataError for notebooks that do not run per phase."""
    stem = Path(notebook).stem
    if stem not in SECTIONS:
        raise DataError(notebook, f"'phase' given, but notebook {stem} has no curriculum section "
                        f"(per-phase notebooks: {', '.join(SECTIONS)})")
    return SECTIONS[stem]


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _value_node(mapping: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(mapping, yaml.MappingNode):
        for k, v in mapping.value:
            if getattr(k, "value", None) == key:
                return v
    return None


def _key_node(mapping: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(mapping, yaml.MappingNode):
        for k, _ in mapping.value:
            if getattr(k, "value", None) == key:
                return k
    return None


def load_curriculum(path: str | Path) -> Curriculum:
    """Read and check ``curriculum.yaml``: a mapping with ``defaults`` (sections only) and ``phases``
    (a list of mappings with a unique integer ``phase``, numbered 0..N-1, and only known keys)."""
    from lekutils.runner.params import load_yaml

    path = Path(path)
    doc = load_yaml(path)
    root = yaml.compose(path.read_text(encoding="utf-8"))
    problems: list[Problem] = []
    if not isinstance(doc, Mapping):
        raise DataError(path, Problem("expected a mapping with 'defaults' and 'phases'", line=_line(root)))
    for k in doc:
        if k not in _TOP_KEYS:
            problems.append(Problem(f"unknown key (allowed: {', '.join(_TOP_KEYS)})", line=_line(_key_node(root, k)),
                                    field=str(k)))
    defaults = doc.get("defaults") or {}
    d_node = _value_node(root, "defaults")
    if not isinstance(defaults, Mapping):
        problems.append(Problem("expected a mapping of sections", line=_line(_key_node(root, "defaults")),
                                field="defaults"))
        defaults = {}
    for k, v in defaults.items():
        if k not in SECTIONS.values():
            problems.append(Problem(f"unknown section (allowed: {', '.join(SECTIONS.values())})",
                                    line=_line(_key_node(d_node, k)), field=f"defaults.{k}"))
        elif v is not None and not isinstance(v, Mapping):
            problems.append(Problem("expected a mapping of parameter names to values",
                                    line=_line(_value_node(d_node, k)), field=f"defaults.{k}"))
    rows = doc.get("phases")
    p_node = _value_node(root, "phases")
    phases: dict[int, dict[str, Any]] = {}
    if not isinstance(rows, list) or not rows:
        problems.append(Problem("expected a non-empty list of phase rows", line=_line(_key_node(root, "phases")),
                                field="phases"))
        rows = []
    for i, row in enumerate(rows):
        node = p_node.value[i] if isinstance(p_node, yaml.SequenceNode) else None
        where = f"phases[{i}]"
        if not isinstance(row, Mapping):
            problems.append(Problem("expected a mapping (phase, title, distill, train)", line=_line(node), field=where))
            continue
        for k, v in row.items():
            if k not in _ROW_KEYS:
                problems.append(Problem(f"unknown key (allowed: {', '.join(_ROW_KEYS)})",
                                        line=_line(_key_node(node, k)), field=f"{where}.{k}"))
            elif k in SECTIONS.values() and v is not None and not isinstance(v, Mapping):
                problems.append(Problem("expected a mapping of parameter names to values",
                                        line=_line(_value_node(node, k)), field=f"{where}.{k}"))
        k = row.get("phase")
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            problems.append(Problem(f"'phase' must be an integer >= 0, got {k!r}",
                                    line=_line(_value_node(node, "phase") or node), field=f"{where}.phase"))
        elif k in phases:
            problems.append(Problem(f"duplicate phase {k}", line=_line(_value_node(node, "phase")),
                                    field=f"{where}.phase"))
        else:
            phases[k] = dict(row)
    missing = sorted(set(range(max(phases) + 1)) - set(phases)) if phases else []
    if missing:
        problems.append(Problem(f"missing phase(s) {', '.join(map(str, missing))} (phases are numbered 0..N-1)",
                                line=_line(_key_node(root, "phases")), field="phases"))
    if problems:
        raise DataError(path, problems)
    return Curriculum(path, {k: dict(v or {}) for k, v in defaults.items()}, phases)


def curriculum_layers(path: str | Path, notebook: str | Path, phase: int) -> list[tuple[str, dict[str, Any]]]:
    """The parameter layers (lowest first) that the curriculum gives one execution of ``notebook``."""
    return load_curriculum(path).layers(section_for(notebook), int(phase))
