"""Regression gates after a curriculum phase.

The adapter is evaluated with the A/B runner (:func:`lekutils.tasks.abtest.run_ab`) on the evaluation
probes under ``baseline`` and the kernel conditions; five values are computed from the records:

- ``creative``: baseline score of the creative probe(s) (probes with ``"creative": true``; mean);
- ``average``: mean baseline score; ``worst``: lowest baseline score of a probe;
- ``kernel_response``: mean over kernel conditions of (condition mean - baseline mean);
- ``degeneration``: responses (all conditions) whose ``degeneration`` signal is >= 1 (repetition
  loops; v2's 0.5 is its long-text quirk and does not count).

Each gate has one rule, absolute or relative to the base model's own values (evaluated once and
cached in the run folder): ``{"min": 13.0}`` (value >= 13), ``{"above": 0.0}`` (value > 0),
``{"max": 0}`` (value <= 0), and ``min_vs_base`` / ``above_vs_base`` / ``max_vs_base`` where the
level is the base model's value plus the given offset. ``ci_vs_base`` (for ``average``) accounts
for the probe-to-probe noise: the gate's value is the upper end of the 95% bootstrap CI of the
paired per-probe change (adapter - base, baseline condition), and it fails only when even that is
below the given (negative) margin, i.e. when the adapter is significantly worse than the base model
by more than the margin. With fewer than 10 probes (no CI) the mean change is compared instead. A failed gate raises :class:`GateFailed`
naming the gate, its value and level, unless failures are allowed (then recorded as failed).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lekutils.core.errors import DataError, Problem
from lekutils.core.jsonl import atomic_write_csv, atomic_write_json

log = logging.getLogger(__name__)
PathLike = str | os.PathLike[str]

GATES = ("creative", "average", "worst", "kernel_response", "degeneration")
RULES = {"min": ">=", "above": ">", "max": "<=", "min_vs_base": ">=", "above_vs_base": ">", "max_vs_base": "<=",
         "ci_vs_base": ">="}
#: The curriculum's gates with its 27B levels.
CURRICULUM_GATES: dict[str, dict[str, float]] = {
    "creative": {"min": 13.0}, "average": {"min": 21.0}, "worst": {"min": 8.0},
    "kernel_response": {"above": 0.0}, "degeneration": {"max": 0},
}


class GateFailed(RuntimeError):
    """A regression gate failed: names the gate, its value and its level."""

    def __init__(self, phase: Any, failed: Sequence[GateResult]):
        self.phase = phase
        self.failed = list(failed)
        parts = [f"gate '{g.gate}' failed: value {g.value:.4g} {g.op} level {g.level:.4g} is false"
                 for g in self.failed]
        super().__init__(f"phase {phase}: " + "; ".join(parts))


@dataclass
class GateResult:
    """One row of the gate table."""

    gate: str
    value: float
    op: str
    level: float
    passed: bool
    rule: str
    base_value: float | None = None


@dataclass
class GateReport:
    """The gate table of one phase."""

    phase: Any
    results: list[GateResult]
    values: dict[str, Any]
    base_values: dict[str, Any] | None
    allow_failure: bool
    ab_path: str | None = None

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> list[GateResult]:
        return [r for r in self.results if not r.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "passed": self.passed, "allow_failure": self.allow_failure,
                "gates": [asdict(r) for r in self.results], "values": self.values,
                "base_values": self.base_values, "ab_path": self.ab_path}

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame([{**asdict(r), "status": "pass" if r.passed else "FAIL"} for r in self.results])


def _score(cond: Mapping[str, Any]) -> float:
    return float(cond["lek_score"])


def _degeneration(cond: Mapping[str, Any]) -> float:
    for key in ("heuristic", "signals", "scores"):
        sig = cond.get(key)
        if isinstance(sig, Mapping) and "degeneration" in sig:
            return float(sig["degeneration"])
    return float(cond.get("degeneration", 0.0))


def gate_values(records: Sequence[Mapping[str, Any]], creative_ids: Sequence[str], *,
                baseline: str = "baseline", degeneration_at: float = 1.0) -> dict[str, Any]:
    """The five gate values (and per-kernel details) from A/B probe records."""
    if not records:
        raise ValueError("no A/B records to gate on")
    base = {r["id"]: _score(r["conditions"][baseline]) for r in records}
    kernels = sorted({c for r in records for c in r["conditions"] if c != baseline})
    base_mean = sum(base.values()) / len(base)
    per_kernel = {k: sum(_score(r["conditions"][k]) for r in records) / len(records) - base_mean for k in kernels}
    creative = [base[i] for i in creative_ids if i in base]
    degenerate = [(r["id"], c) for r in records for c, v in r["conditions"].items()
                  if _degeneration(v) >= degeneration_at]
    return {
        "creative": sum(creative) / len(creative) if creative else math.nan,
        "average": base_mean,
        "worst": min(base.values()),
        "kernel_response": sum(per_kernel.values()) / len(per_kernel) if per_kernel else math.nan,
        "degeneration": float(len(degenerate)),
        "worst_probe": min(base, key=base.get),
        "kernel_response_by_condition": per_kernel,
        "degenerate_responses": [f"{i}/{c}" for i, c in degenerate],
        "creative_probes": [i for i in creative_ids if i in base],
        "n_probes": len(records), "kernels": kernels, "baseline_scores": base,
    }


def check_spec(spec: Mapping[str, Mapping[str, float]], where: str = "gates") -> None:
    """Validate a gate spec (names, one known rule each); raise DataError naming the gate."""
    problems = []
    for name, rule in spec.items():
        if name not in GATES:
            problems.append(Problem(f"unknown gate (known: {', '.join(GATES)})", field=name))
        elif not isinstance(rule, Mapping) or len(rule) != 1 or next(iter(rule)) not in RULES:
            problems.append(Problem(f"needs exactly one rule of {', '.join(RULES)}, got {rule!r}", field=name))
    if problems:
        raise DataError(where, problems)


def needs_base(spec: Mapping[str, Mapping[str, float]]) -> bool:
    return any(next(iter(rule)).endswith("_vs_base") for rule in spec.values())


def _ci_change(values: Mapping[str, Any], base_values: Mapping[str, Any]) -> tuple[float, float]:
    """(upper 95% CI bound, mean) of the paired per-probe baseline change adapter - base."""
    from lekutils.report.stats import paired_delta

    a, b = base_values["baseline_scores"], values["baseline_scores"]
    common = [k for k in a if k in b]
    d = paired_delta([a[k] for k in common], [b[k] for k in common])
    return d.ci_high, d.delta


def apply_gates(values: Mapping[str, Any], spec: Mapping[str, Mapping[str, float]],
                base_values: Mapping[str, Any] | None = None) -> list[GateResult]:
    """Compare values with the levels of ``spec`` (relative rules need ``base_values``)."""
    check_spec(spec)
    out = []
    for name, rule in spec.items():
        kind, x = next(iter(rule.items()))
        base = None
        if kind.endswith("_vs_base") and base_values is None:
            raise ValueError(f"gate '{name}' is relative to the base model but no base values were given")
        if kind == "ci_vs_base":
            if name != "average":
                raise DataError("gates", Problem("ci_vs_base applies to the 'average' gate only", field=name))
            high, mean = _ci_change(values, base_values)  # type: ignore[arg-type]
            base, level = float(base_values[name]), float(x)  # type: ignore[index]
            value = mean if math.isnan(high) else high
        elif kind.endswith("_vs_base"):
            base = float(base_values[name])  # type: ignore[index]
            level = base + float(x)
            value = float(values[name])
        else:
            level = float(x)
            value = float(values[name])
        op = RULES[kind]
        ok = not math.isnan(value) and (value >= level if op == ">=" else value > level if op == ">" else value <= level)
        out.append(GateResult(name, value, op, level, bool(ok), f"{kind}: {x}", base))
    return out


def enforce(report: GateReport) -> GateReport:
    """Raise :class:`GateFailed` for failed gates unless the report allows failures (then log them)."""
    if report.failed:
        if not report.allow_failure:
            raise GateFailed(report.phase, report.failed)
        log.warning("phase %s: %d gate(s) failed, continuing as allowed: %s", report.phase, len(report.failed),
                    ", ".join(g.gate for g in report.failed))
    return report


def creative_ids_of(probes: Sequence[Any]) -> list[str]:
    """Ids of the probes marked ``"creative": true``."""
    return [p.id for p in probes if (getattr(p, "extra", None) or {}).get("creative")]


def evaluate_and_gate(phase: Any, model: str, probes: Sequence[Any], conditions: Sequence[Any],
                      spec: Mapping[str, Mapping[str, float]], *, adapter_path: PathLike | None,
                      run_dir: PathLike, sampler: Any = None, allow_failure: bool = False,
                      batch_size: int = 16, degeneration_at: float = 1.0, progress: Any = None,
                      table_dir: PathLike | None = None, enforce_now: bool = True) -> GateReport:
    """Evaluate the adapter with the A/B runner, compute and write the gate table, then enforce it.

    Writes ``<run_dir>/ab/gate_phase<K>.jsonl`` (A/B records), ``gates.json`` in the adapter folder
    (or ``table_dir``) and ``<run_dir>/tables/gates_phase<K>.csv``. The base model's evaluation
    (for relative levels) is ``<run_dir>/ab/gate_base.jsonl``, computed once and reused.
    ``enforce_now=False`` returns the report without raising (show it, then call :func:`enforce`).
    """
    from lekutils.tasks.abtest import load_ab, run_ab

    check_spec(spec)
    run_dir = Path(run_dir)
    creative = creative_ids_of(probes)
    if "creative" in spec and not creative:
        raise ValueError("a 'creative' gate needs a probe marked \"creative\": true in the evaluation set")
    base_values = None
    if needs_base(spec):
        base_path = run_dir / "ab" / "gate_base.jsonl"
        run_ab(model, probes, conditions, base_path, adapter_path=None, sampler=sampler, batch_size=batch_size,
               progress=progress)
        base_values = gate_values(load_ab(base_path), creative, degeneration_at=degeneration_at)
    ab_path = run_dir / "ab" / f"gate_phase{phase}.jsonl"
    run_ab(model, probes, conditions, ab_path, adapter_path=adapter_path, sampler=sampler, batch_size=batch_size,
           progress=progress)
    values = gate_values(load_ab(ab_path), creative, degeneration_at=degeneration_at)
    report = GateReport(phase, apply_gates(values, spec, base_values), values, base_values, allow_failure,
                        str(ab_path))
    write_report(report, Path(table_dir) if table_dir else Path(adapter_path) if adapter_path else run_dir, run_dir)
    return enforce(report) if enforce_now else report


def write_report(report: GateReport, out_dir: Path, run_dir: Path) -> Path:
    """Write ``gates.json`` into ``out_dir`` and ``tables/gates_phase<K>.csv`` into the run folder."""
    path = atomic_write_json(out_dir / "gates.json", report.to_dict())
    atomic_write_csv(run_dir / "tables" / f"gates_phase{report.phase}.csv",
                     [{k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(r).items()}
                      for r in report.results])
    return path


def gate_ab_files(phase: Any, ab_path: PathLike, spec: Mapping[str, Mapping[str, float]], *,
                  creative_ids: Sequence[str], base_ab_path: PathLike | None = None, allow_failure: bool = False,
                  out_dir: PathLike | None = None, run_dir: PathLike | None = None,
                  degeneration_at: float = 1.0) -> GateReport:
    """Gate an existing A/B file (and the base model's, for relative rules); write and enforce the table."""
    from lekutils.tasks.abtest import load_ab

    check_spec(spec)
    if needs_base(spec) and base_ab_path is None:
        raise ValueError("relative gates need the base model's A/B file")
    base_values = gate_values(load_ab(base_ab_path), creative_ids, degeneration_at=degeneration_at) \
        if base_ab_path is not None else None
    values = gate_values(load_ab(ab_path), creative_ids, degeneration_at=degeneration_at)
    report = GateReport(phase, apply_gates(values, spec, base_values), values, base_values, allow_failure,
                        str(ab_path))
    if out_dir is not None:
        write_report(report, Path(out_dir), Path(run_dir or out_dir))
    return enforce(report)
