"""Regression gates: values from A/B records, absolute and relative levels, failure messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lekutils.core.errors import DataError
from lekutils.train.gates import (
    CURRICULUM_GATES,
    GateFailed,
    GateReport,
    apply_gates,
    enforce,
    gate_ab_files,
    gate_values,
)


def _rec(pid: str, base: float, kern: float, degen: float = 0.0) -> dict:
    def cond(s: float, d: float) -> dict:
        return {"response": "x", "lek_score": s, "heuristic": {"degeneration": d, "lek_score": s}}

    return {"type": "probe", "id": pid, "category": "c", "prompt": "p",
            "conditions": {"baseline": cond(base, 0.5), "json": cond(kern, degen)}}


RECS = [_rec("P1", 10.0, 14.0), _rec("P2", 20.0, 21.0, degen=1.0), _rec("C1", 30.0, 31.0)]


def _write_ab(path: Path, recs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + json.dumps({"type": "summary"}) + "\n")
    return path


def test_gate_values() -> None:
    v = gate_values(RECS, ["C1"])
    assert v["creative"] == 30.0 and v["average"] == 20.0 and v["worst"] == 10.0
    assert v["worst_probe"] == "P1"
    assert v["kernel_response"] == pytest.approx(2.0)  # json mean 22 - baseline mean 20
    assert v["degeneration"] == 1.0 and v["degenerate_responses"] == ["P2/json"]  # 0.5 does not count
    assert gate_values(RECS, ["C1"], degeneration_at=0.5)["degeneration"] == 4.0


def test_absolute_levels_fail_with_gate_value_and_level() -> None:
    results = apply_gates(gate_values(RECS, ["C1"]), CURRICULUM_GATES)
    table = {r.gate: r for r in results}
    assert table["creative"].passed and table["kernel_response"].passed
    assert not table["average"].passed and table["average"].level == 21.0
    assert table["worst"].passed  # 10 >= 8
    assert not table["degeneration"].passed
    with pytest.raises(GateFailed) as e:
        enforce(GateReport(2, results, {}, None, allow_failure=False))
    msg = str(e.value)
    assert "phase 2" in msg and "gate 'average' failed: value 20 >= level 21" in msg and "'degeneration'" in msg
    rep = enforce(GateReport(2, results, {}, None, allow_failure=True))  # allowed: recorded, not hidden
    assert not rep.passed and [g.gate for g in rep.failed] == ["average", "degeneration"]
    assert set(rep.to_frame()["status"]) == {"pass", "FAIL"}


def test_relative_levels_use_base_values() -> None:
    base = gate_values([_rec("P1", 12.0, 11.0), _rec("P2", 20.0, 20.0), _rec("C1", 31.0, 30.0)], ["C1"])
    spec = {"creative": {"min_vs_base": -2.0}, "average": {"min_vs_base": -1.0}, "worst": {"min_vs_base": -1.0},
            "kernel_response": {"above_vs_base": 0.0}, "degeneration": {"max_vs_base": 0}}
    table = {r.gate: r for r in apply_gates(gate_values(RECS, ["C1"]), spec, base)}
    assert table["creative"].level == 29.0 and table["creative"].passed
    assert table["worst"].level == 11.0 and not table["worst"].passed
    assert table["kernel_response"].base_value == pytest.approx(-2 / 3)
    assert table["kernel_response"].passed and not table["degeneration"].passed
    with pytest.raises(ValueError, match="relative"):
        apply_gates(gate_values(RECS, ["C1"]), spec, None)
    with pytest.raises(DataError, match="field 'avg'"):
        apply_gates({}, {"avg": {"min": 1}})


def test_gate_on_upstream_ab_file(upstream: Path, tmp_path: Path) -> None:
    ab = upstream / "benchmarks" / "ab-base-1b-mlxlm.jsonl"
    rep = gate_ab_files(0, ab, {"average": {"min": 0.0}, "kernel_response": {"above": -100.0}},
                        creative_ids=[], out_dir=tmp_path)
    assert rep.passed and rep.values["n_probes"] == 20 and rep.values["kernels"] == ["json", "txt"]
    assert json.loads((tmp_path / "gates.json").read_text())["passed"] is True
    assert (tmp_path / "tables" / "gates_phase0.csv").exists()


def test_failing_gate_stops_a_subprocess_with_its_message(tmp_path: Path) -> None:
    ab = _write_ab(tmp_path / "ab.jsonl", RECS)
    cmd = [sys.executable, "-m", "lekutils", "gates", str(ab), "--phase", "3", "--creative", "C1",
           "--out", str(tmp_path / "out")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert "phase 3: gate 'average' failed: value 20 >= level 21 is false" in p.stderr
    table = json.loads((tmp_path / "out" / "gates.json").read_text())  # written before stopping
    assert table["passed"] is False and {g["gate"] for g in table["gates"] if not g["passed"]} == {
        "average", "degeneration"}
    ok = subprocess.run(cmd + ["--allow-failure"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "FAIL" in ok.stdout


def test_ci_vs_base_fails_only_a_significant_drop_beyond_the_margin() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    base_scores = rng.normal(5.0, 6.0, size=40)
    base = gate_values([_rec(f"P{i}", s, s) for i, s in enumerate(base_scores)], [])
    noisy = gate_values([_rec(f"P{i}", s + rng.normal(-0.3, 3.0), s) for i, s in enumerate(base_scores)], [])
    collapsed = gate_values([_rec(f"P{i}", s - 11.8 + rng.normal(0, 3.0), s) for i, s in enumerate(base_scores)], [])
    spec = {"average": {"ci_vs_base": -1.0}}
    ok = apply_gates(noisy, spec, base)[0]
    assert ok.passed and ok.value > -1.0 and ok.level == -1.0 and ok.base_value == pytest.approx(base["average"])
    bad = apply_gates(collapsed, spec, base)[0]  # the smoke collapse: -11.8 on average
    assert not bad.passed and bad.value < -9.0
    few = gate_values([_rec("P1", 1.0, 1.0), _rec("P2", 3.0, 3.0)], [])  # n < 10: no CI, the mean change
    assert apply_gates(few, spec, gate_values([_rec("P1", 2.0, 2.0), _rec("P2", 2.0, 2.0)], []))[0].value == 0.0
    with pytest.raises(DataError, match="average"):
        apply_gates(noisy, {"worst": {"ci_vs_base": -1.0}}, base)
