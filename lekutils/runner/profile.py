"""Profiles: ``params/<profile>/pipeline.yaml`` lists notebook executions; parameters resolve per execution.

A profile is an ordered list of notebook executions, each with its parameter file. Parameters
resolve as notebook default < curriculum defaults < curriculum phase row (executions with
``phase: K``, :mod:`lekutils.runner.curriculum`) < profile YAML < ``-f`` file < ``-p`` and are validated (see
:mod:`lekutils.runner.params`) before anything runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lekutils.core.errors import DataError, ParameterError, Problem
from lekutils.core.paths import NOTEBOOKS_DIR, PARAMS_DIR, REPO_ROOT, run_dir
from lekutils.runner.params import check_value, coerce, load_yaml, notebook_parameters


@dataclass
class Execution:
    """One notebook execution of a pipeline, with its resolved parameters."""

    name: str
    notebook: Path
    params_file: Path | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # parameter -> where its value came from
    phase: int | None = None  # curriculum phase: parameters from <profile>/curriculum.yaml (runner.curriculum)
    curriculum: Path | None = None
    experiment: str = ""  # a named re-run (``run --name``): its outputs sit beside the unnamed run's

    @property
    def key(self) -> str:
        """The execution's identity in the manifest: ``name`` or ``name@experiment``."""
        return f"{self.name}@{self.experiment}" if self.experiment else self.name

    @property
    def output(self) -> str:
        return f"notebooks/{self.name}@{self.experiment}.ipynb" if self.experiment else f"notebooks/{self.name}.ipynb"


def notebook_path(name: str) -> Path:
    p = Path(name)
    if p.suffix != ".ipynb":
        p = NOTEBOOKS_DIR / f"{name}.ipynb"
    elif not p.is_absolute() and not p.exists():
        p = NOTEBOOKS_DIR / p.name
    return p


def load_pipeline(profile: str, params_root: Path = PARAMS_DIR) -> list[Execution]:
    """The ordered executions of ``params/<profile>/pipeline.yaml`` (parameters not yet merged)."""
    folder = params_root / profile
    path = folder / "pipeline.yaml"
    if not path.exists():
        known = sorted(p.name for p in params_root.iterdir() if (p / "pipeline.yaml").exists()) if params_root.exists() else []
        raise DataError(path, f"no such profile '{profile}'; known profiles: {', '.join(known) or 'none'}")
    doc = load_yaml(path) or {}
    items = doc.get("executions") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise DataError(path, Problem("expected a mapping with a list 'executions'", field="executions"))
    problems, out, names = [], [], set()
    for i, item in enumerate(items):
        where = f"executions[{i}]"
        if not isinstance(item, dict) or "notebook" not in item:
            problems.append(Problem("each execution needs a 'notebook'", field=where))
            continue
        unknown = set(item) - {"notebook", "name", "params", "parameters", "phase"}
        if unknown:
            problems.append(Problem(f"unknown keys {sorted(unknown)} (allowed: notebook, name, params, parameters, "
                                    "phase)", field=where))
        name = str(item.get("name", item["notebook"]))
        if name in names:
            problems.append(Problem(f"duplicate execution name '{name}'", field=f"{where}.name"))
        names.add(name)
        nb = notebook_path(str(item["notebook"]))
        if not nb.exists():
            problems.append(Problem(f"notebook {nb} not found", field=f"{where}.notebook"))
        ex = Execution(name=name, notebook=nb)
        if item.get("params"):
            ex.params_file = folder / str(item["params"])
            if not ex.params_file.exists():
                problems.append(Problem(f"parameter file {ex.params_file} not found", field=f"{where}.params"))
        ex.parameters = dict(item.get("parameters") or {})
        if item.get("phase") is not None:  # parameters from the curriculum table (lekutils.runner.curriculum)
            ex.phase, ex.curriculum = item["phase"], folder / "curriculum.yaml"
            if not isinstance(ex.phase, int) or isinstance(ex.phase, bool):
                problems.append(Problem(f"'phase' must be an integer, got {ex.phase!r}", field=f"{where}.phase"))
            elif not ex.curriculum.exists():
                problems.append(Problem(f"curriculum table {ex.curriculum} not found", field=f"{where}.phase"))
        out.append(ex)
    if problems:
        raise DataError(path, problems)
    return out


def resolve(
    executions: Sequence[Execution],
    profile: str,
    extra_files: Sequence[Path] = (),
    overrides: Mapping[str, Any] | None = None,
    out_dir: Path | None = None,
    experiment: str = "",
) -> list[Execution]:
    """Merge parameters (default < profile YAML < -f files < -p) and validate them all.

    ``-f``/``-p`` keys apply to every selected execution whose notebook declares them; a key may
    be scoped to one execution as ``<execution>.<key>``. Raises :class:`ParameterError` listing
    every unknown or mistyped parameter before anything runs.
    """
    layers: list[tuple[str, dict[str, Any]]] = []
    for f in extra_files:
        doc = load_yaml(Path(f)) or {}
        if not isinstance(doc, dict):
            raise DataError(f, "expected a mapping of parameter names to values")
        layers.append((f"-f {f}", doc))
    if overrides:
        layers.append(("-p", dict(overrides)))
    errors: list[ParameterError] = []
    names = {e.name for e in executions}
    used: set[tuple[str, str]] = set()
    resolved = []
    for ex in executions:
        specs = notebook_parameters(ex.notebook)
        msgs: list[str] = []
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        file_params = {}
        if ex.params_file is not None:
            doc = load_yaml(ex.params_file) or {}
            if not isinstance(doc, dict):
                raise DataError(ex.params_file, "expected a mapping of parameter names to values")
            file_params = doc
        if ex.phase is not None:  # notebook default < curriculum defaults[section] < phases[K][section] < params
            from lekutils.runner.curriculum import curriculum_layers

            for origin, layer in curriculum_layers(ex.curriculum, ex.notebook, ex.phase):
                for k, v in layer.items():
                    if k not in specs:
                        msgs.append(f"unknown parameter '{k}' in {origin}")
                    else:
                        values[k], sources[k] = v, origin
        origin = str(ex.params_file or "pipeline.yaml")
        for k, v in {**file_params, **ex.parameters}.items():
            if k not in specs:
                msgs.append(f"unknown parameter '{k}' in {origin}")
                continue
            values[k], sources[k] = v, origin
        for origin, layer in layers:
            for k, v in layer.items():
                scope, _, key = k.partition(".") if k.split(".", 1)[0] in names and "." in k else ("", "", k)
                if scope and scope != ex.name:
                    continue
                if key in specs:
                    values[key], sources[key] = v, origin
                    used.add((origin, k))
                elif scope:
                    msgs.append(f"unknown parameter '{key}' (from {origin})")
                    used.add((origin, k))
        if "run_dir" in specs and "run_dir" not in values:
            values["run_dir"], sources["run_dir"] = _rel(out_dir or run_dir(profile)), "runner"
        if experiment:
            if "experiment" not in specs:
                msgs.append("--name: this notebook has no 'experiment' parameter (only notebooks whose results "
                            "can sit beside each other take a name; use --out for a separate run folder)")
            else:
                values["experiment"], sources["experiment"] = experiment, "--name"
        for k, v in list(values.items()):
            msg = check_value(specs[k], v)
            if msg:
                msgs.append(f"{msg} (from {sources[k]})")
            else:
                values[k] = coerce(specs[k], v)
        if not msgs:  # values a type cannot check (e.g. the reference models of a distillation phase)
            from lekutils.tasks.augment import runner_problems

            msgs += runner_problems(ex.notebook, values, sources)
        if msgs:
            known = ", ".join(f"{s.name}: {s.type.__name__ if s.type else 'any'}" for s in specs.values())
            errors.append(ParameterError(f"{ex.name} ({ex.notebook.name})", msgs + [f"known parameters: {known}"]))
        resolved.append(Execution(ex.name, ex.notebook, ex.params_file, values, sources, ex.phase, ex.curriculum,
                                  experiment))
    for origin, layer in layers:
        for k in layer:
            if (origin, k) not in used:
                errors.append(ParameterError(origin, [
                    f"parameter '{k}' is not declared by any selected notebook "
                    f"({', '.join(e.name for e in executions)})"]))
    if errors:
        raise ParameterError("parameter check", [str(e) for e in errors])
    return resolved


def check_experiment_name(name: str) -> str:
    """A ``--name`` is a short file-name-safe word: letters, digits, ``-``, ``_``, ``.``."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name or ""):
        raise ParameterError("--name", [f"'{name}' is not a valid experiment name: use 1-64 letters, digits, "
                                        "'-', '_' or '.', starting with a letter or digit"])
    return name


def _rel(path: Path) -> str:
    """``path`` relative to the repository root where it lies inside it, else absolute."""
    path = Path(path).resolve() if not Path(path).is_absolute() else Path(path)
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)
