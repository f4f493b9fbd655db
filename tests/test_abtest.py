"""A/B summaries and the reader, checked against the published upstream records (no model)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lekutils.core.errors import DataError
from lekutils.tasks.abtest import ab_frame, ab_summary, load_ab, load_ab_summary
from lekutils.tasks.loop import adapter_info, work_path

AB_FILES = ["ab-base-1b-mlxlm.jsonl", "ab-base-27b-mlxlm.jsonl", "ab-base-gemma3-12b-mlxlm.jsonl",
            "ab-lek-gemma3-1b-v1-mlxlm.jsonl", "ab-p100-gemma3-12b-mlxlm.jsonl"]


@pytest.mark.parametrize("name", AB_FILES)
def test_summary_reproduces_upstream(upstream: Path, name: str) -> None:
    path = upstream / "benchmarks" / name
    recs = load_ab(path)
    theirs = load_ab_summary(path)
    assert theirs is not None and all(r["type"] == "probe" for r in recs)
    mine = ab_summary(recs, [c["name"] for c in theirs["conditions"]])
    assert mine["total_probes"] == theirs["total_probes"] == len(recs)
    assert mine["conditions"] == theirs["conditions"]
    assert mine["categories"] == theirs["categories"]


def _rec(pid: str, cat: str, **scores: float) -> dict:
    return {"type": "probe", "id": pid, "category": cat, "prompt": "p",
            "conditions": {k: {"response": "r", "lek_score": v} for k, v in scores.items()}}


def test_threshold_edges_and_categories() -> None:
    recs = [_rec("a", "x", baseline=10, k=10.5), _rec("b", "x", baseline=10, k=10.51),
            _rec("c", "y", baseline=10, k=9.4), _rec("d", "y", baseline=10)]  # d lacks k: not counted
    s = ab_summary(recs, ["baseline", "k"])
    base, k = s["conditions"]
    assert s["total_probes"] == 3
    assert base == {"name": "baseline", "avg_lek": 10.0, "improved": 0, "regressed": 0, "unchanged": 0}
    assert (k["improved"], k["regressed"], k["unchanged"]) == (1, 1, 1)
    assert k["delta_vs_baseline"] == round((10.5 + 10.51 + 9.4) / 3 - 10, 2)
    assert s["categories"] == {"x": {"baseline": 10.0, "k": round((10.5 + 10.51) / 2, 2)}, "y": {"baseline": 10.0, "k": 9.4}}
    no_base = ab_summary(recs[:3], ["k"])
    assert "improved" not in no_base["conditions"][0]


def test_frame_deltas(upstream: Path) -> None:
    recs = load_ab(upstream / "benchmarks" / "ab-base-1b-mlxlm.jsonl")
    df = ab_frame(recs)
    assert len(df) == 60 and set(df["condition"]) == {"baseline", "json", "txt"}
    assert (df[df.condition == "baseline"]["delta"] == 0).all()
    r0 = recs[0]["conditions"]
    row = df[(df.id == recs[0]["id"]) & (df.condition == "txt")].iloc[0]
    assert math.isclose(row["delta"], r0["txt"]["lek_score"] - r0["baseline"]["lek_score"])


def test_reader_errors(tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    good = _rec("a", "x", baseline=1)
    lines = [json.dumps(good), json.dumps({"type": "probe", "id": "b", "conditions": {"baseline": {"lek_score": "x"}}}),
             json.dumps({"type": "mystery"}), "{broken"]
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        load_ab(f)
    assert [p.line for p in e.value.problems] == [4]  # JSON errors come first, from iter_jsonl
    f.write_text("\n".join(lines[:3]) + "\n")
    with pytest.raises(DataError) as e:
        load_ab(f)
    assert [(p.line, p.field) for p in e.value.problems] == [(2, "conditions.baseline.lek_score"), (3, "type")]


def test_work_path() -> None:
    assert work_path("runs/smoke/ab/x.jsonl") == Path("runs/smoke/ab/x.partial.jsonl")


def test_select_probes_run_name_adapter_info(tmp_path: Path) -> None:
    from lekutils.data.probes import Probe
    from lekutils.tasks.abtest import run_name, select_probes

    ps = [Probe(f"P{i}", "c", "p") for i in range(5)]
    assert [p.id for p in select_probes(ps, max_probes=2)] == ["P0", "P1"]
    assert [p.id for p in select_probes(ps, ids=["P3", "P1"])] == ["P1", "P3"]
    assert select_probes(ps) == ps
    with pytest.raises(ValueError, match="unknown probe ids"):
        select_probes(ps, ids=["P9"])
    assert run_name("embedded:smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert run_name("mlx-community/gemma-3-27b-it-qat-4bit", "runs/x/adapters/phase4/") == \
        "gemma-3-27b-it-qat-4bit+phase4"
    assert adapter_info(None) is None
    d = tmp_path / "phase1"
    d.mkdir()
    assert adapter_info(d) == {"path": str(d), "sha256": None}
    (d / "adapters.safetensors").write_bytes(b"abc")
    assert adapter_info(d)["sha256"] == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
