"""Execution: the Jupyter kernel spec the notebooks run on, Papermill execution and the pipeline loop."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lekutils.core import lock
from lekutils.core.errors import DataError, ParameterError
from lekutils.core.jsonl import atomic_write_json, read_json_file
from lekutils.core.paths import PARAMS_DIR, REPO_ROOT, run_dir
from lekutils.core.progress import ENV as PROGRESS_ENV
from lekutils.core.progress import ProgressWatcher
from lekutils.core.stages import PROFILE_ENV
from lekutils.runner.manifest import build_manifest, merge_executions
from lekutils.runner.profile import Execution, check_experiment_name, load_pipeline, notebook_path, resolve

#: Name of the Jupyter kernel spec (an ipykernel for this venv) that notebooks declare and run on.
KERNELSPEC_NAME = "lekutils"


def install_kernelspec(name: str = KERNELSPEC_NAME, prefix: str | None = None) -> Path:
    """Register a named ipykernel for this interpreter, carrying the OpenBLAS environment.

    The notebooks declare this kernel spec (``lekutils``), so Jupyter and plain ``papermill`` run them
    on this venv wherever they are opened."""
    from lekutils.core.blas import blas_env

    prefix = prefix or sys.prefix
    folder = Path(prefix) / "share" / "jupyter" / "kernels" / name
    spec = {
        # --log-level: the kernel's own log lines ("running over TCP without encryption", a
        # shutdown's "KeyboardInterrupt caught") are noise in the runner's terminal; cell errors and
        # a dead kernel still reach the runner through the Jupyter protocol.
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}", "--log-level=CRITICAL"],
        "display_name": f"LEK workbook ({Path(sys.prefix).name})",
        "language": "python",
        "metadata": {"debugger": True},
        # no MPLBACKEND: the kernel's inline backend shows figures in the notebook (lekutils.notebook)
        "env": {**blas_env(), "LEKUTILS_BLAS_REEXEC": "1", "PYTHONHASHSEED": "0"},
    }
    atomic_write_json(folder / "kernel.json", spec)
    return folder


def kernelspec_installed(name: str = KERNELSPEC_NAME) -> bool:
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


class KernelDied(ExecutionFailed):
    """The notebook's Jupyter kernel died (killed, out of memory, crashed) mid-execution."""

    def __str__(self) -> str:
        return (f"notebook '{self.name}': the Jupyter kernel died ({self.error}); executed notebook: "
                f"{self.output}; re-run the same command to resume (finished work is kept)")


def execute(ex: Execution, out_dir: Path, *, progress_bar: bool = True, kernel_name: str = KERNELSPEC_NAME,
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
    except RuntimeError as e:  # nbclient's DeadKernelError, or a kernel that could not start
        if type(e).__name__ != "DeadKernelError" and "kernel died" not in str(e).lower():
            raise
        first = (str(e).strip().splitlines() or [""])[0][:200]
        why = first if first and first.lower().rstrip(".") != "kernel died" else "killed, out of memory or crashed"
        raise KernelDied(ex.name, out, None, None, "", why) from None
    return out


@contextlib.contextmanager
def _kernel_env(values: Mapping[str, str]) -> Iterator[None]:
    """Set variables in the environment the notebook's kernel inherits (the progress file, the profile)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


LOCK_HINT = "wait for it to finish, or pass --wait-lock to wait for it"


def _history_entry(old: Mapping[str, Any]) -> dict[str, Any]:
    """A record of an earlier run for the manifest's ``history``: what ran, with which parameters."""
    keep = ("name", "experiment", "status", "started", "duration_s", "error", "parameters", "output")
    return {"created": old.get("created"), "command": old.get("command"), "status": old.get("status"),
            "duration_s": old.get("duration_s"), "git": (old.get("git") or {}).get("commit"),
            **({"interrupted_noticed": old["interrupted_noticed"]} if old.get("interrupted_noticed") else {}),
            "executions": [{k: e.get(k) for k in keep if k in e}
                           for e in old.get("executions", []) if not e.get("from_earlier_run")]}


def previous_state(manifest_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The run folder's history (earlier runs, oldest first; the last one marked ``interrupted`` if
    its runner died while it was ``running`` — we hold the folder's lock, so it is not running) and
    the executions its manifest lists (kept in the new manifest where this run does not redo them)."""
    if not manifest_path.exists():
        return [], []
    try:
        old = read_json_file(manifest_path, "manifest")
    except DataError:
        return [], []  # an unreadable manifest is replaced; the run folder's records are what matter
    if not isinstance(old, dict):
        return [], []
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if old.get("status") in (None, "running") or any(e.get("status") == "running" for e in old.get("executions", [])):
        old["status"], old["interrupted_noticed"] = "interrupted", now
        for e in old.get("executions", []):
            if e.get("status") == "running":
                e["status"] = "interrupted"
    executions = [e for e in old.get("executions", []) if isinstance(e, dict) and "name" in e]
    return [*old.get("history", []), _history_entry(old)], executions


def previous_runs(manifest_path: Path) -> list[dict[str, Any]]:
    """The history of the run folder (see :func:`previous_state`)."""
    return previous_state(manifest_path)[0]


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
    wait_lock: bool = False,
    on_event: Callable[[str, Execution, dict[str, Any]], None] | None = None,
    name: str = "",
) -> dict[str, Any]:
    """Validate and execute a profile's pipeline (or the named notebooks of it); return the manifest.

    ``name`` makes the run a named experiment: notebooks take it as their ``experiment`` parameter
    and write their results beside the unnamed run's (e.g. ``ab/<model>@<name>.jsonl``), the executed
    copies are ``notebooks/<execution>@<name>.ipynb``, and the manifest lists them as ``<execution>@<name>``.
    The manifest keeps every execution of the run folder (this run's replace their earlier entries)
    and, in ``history``, every earlier run with its executions' parameters.

    The run folder is locked for the whole run (:mod:`lekutils.core.lock`): a second run on it
    raises :class:`~lekutils.core.lock.LockedError` at once, or waits with ``wait_lock=True``.
    A manifest left ``running`` by a killed runner is kept in the new manifest's ``history``,
    marked ``interrupted``.
    """
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
    if name:
        check_experiment_name(name)
    executions = resolve(executions, profile, extra_files, overrides, out_dir, experiment=name)
    manifest = build_manifest(profile, executions, argv)
    if dry_run:
        return manifest
    out_dir.mkdir(parents=True, exist_ok=True)
    with lock.hold(out_dir, folder=True, wait=wait_lock, hint=LOCK_HINT, export=True):
        return _run_locked(manifest, executions, out_dir, progress_bar, on_event)


def _run_locked(manifest: dict[str, Any], executions: Sequence[Execution], out_dir: Path, progress_bar: bool,
                on_event: Callable[[str, Execution, dict[str, Any]], None] | None) -> dict[str, Any]:
    manifest_path = out_dir / "manifest.json"
    manifest["status"] = "running"
    manifest["history"], earlier = previous_state(manifest_path)
    current = manifest["executions"]  # this run's entries; the manifest lists them among the earlier ones
    manifest["executions"] = merge_executions(earlier, current)
    atomic_write_json(manifest_path, manifest)
    install_kernelspec()  # (re)written each run so the kernel's BLAS environment matches this venv
    total_start = time.time()
    for i, ex in enumerate(executions):
        entry = current[i]
        entry["status"], entry["started"] = "running", datetime.now(timezone.utc).isoformat()
        atomic_write_json(manifest_path, manifest)
        if on_event:
            on_event("start", ex, {"index": i, "total": len(executions)})
        t0 = time.time()
        try:
            env = {PROFILE_ENV: str(manifest["profile"])}
            if progress_bar:  # live generation/training progress from inside the notebook, in the terminal
                channel = out_dir / ".progress" / f"{ex.key}.json"
                with _kernel_env({**env, PROGRESS_ENV: str(channel)}), ProgressWatcher(channel):
                    execute(ex, out_dir, progress_bar=False)
            else:
                with _kernel_env(env):
                    execute(ex, out_dir, progress_bar=False)
        except BaseException as e:
            status = "interrupted" if isinstance(e, (KeyboardInterrupt, SystemExit, KernelDied)) else "failed"
            entry["status"], entry["duration_s"] = status, round(time.time() - t0, 2)
            entry["error"] = str(e) or type(e).__name__
            manifest["status"], manifest["duration_s"] = status, round(time.time() - total_start, 2)
            atomic_write_json(manifest_path, manifest)
            raise
        entry["status"], entry["duration_s"] = "ok", round(time.time() - t0, 2)
        atomic_write_json(manifest_path, manifest)
        if on_event:
            on_event("done", ex, entry)
    manifest["status"], manifest["duration_s"] = "ok", round(time.time() - total_start, 2)
    atomic_write_json(manifest_path, manifest)
    return manifest
