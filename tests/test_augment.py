"""External augmentation (issue 16 part 3): the mix arithmetic, the seeded selection, parameter checks,
and a distillation phase with a reference model on tiny random MLX models (records, summary, resume)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lekutils.tasks import augment
from lekutils.tasks.augment import (
    REFERENCE_INDEX_BASE,
    apply_mix,
    check_parameters,
    plan_mix,
    select_references,
    wanted_references,
)

# ----------------------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize(("n_self", "fraction", "want"), [
    (7, 0.3, 3),      # 3 / 10 = 30% exactly
    (70, 0.3, 30),
    (14, 0.3, 6),     # 6/20
    (3, 0.3, 1),      # 1/4 = 25% (closer than 2/5 = 40%)
    (1, 0.3, 0),      # 0% is 0.30 away, 1/2 = 50% is 0.20 away -> 1? no: see below
    (0, 0.3, 0),      # no self examples: references never exceed their share
    (10, 0.0, 0),
    (9, 0.5, 9),
    (5, 0.25, 2),     # 5/3 = 1.67: 2/7 = 28.6% beats 1/6 = 16.7%
])
def test_wanted_references_is_the_count_closest_to_the_fraction(n_self: int, fraction: float, want: int) -> None:
    got = wanted_references(n_self, fraction)
    if n_self == 1:  # 0.43 references: 1/2 = 50% (0.2 away) beats 0/1 = 0% (0.3 away)
        want = 1
    assert got == want
    if n_self:  # no other count comes closer
        best = min(range(0, 4 * n_self + 2), key=lambda n: (abs(n / (n_self + n) - fraction), n))
        assert got == best


def test_plan_mix_uses_every_self_example_and_reports_shortfalls() -> None:
    p = plan_mix(14, 20, 0.3)
    assert (p.self_used, p.reference_used, p.achieved, p.limited_by) == (14, 6, 0.3, "self")
    assert "too few self-distilled" in p.note() and "6 of 20" in p.note()
    p = plan_mix(14, 2, 0.3)
    assert (p.self_used, p.reference_used, p.wanted_references, p.limited_by) == (14, 2, 6, "references")
    assert p.achieved == round(2 / 16, 4) and "too few references" in p.note()
    p = plan_mix(7, 3, 0.3)
    assert p.limited_by is None and p.achieved == 0.3 and p.to_dict()["self_fraction"] == 0.7
    p = plan_mix(0, 5, 0.3)
    assert p.total == 0 and p.achieved is None and "no self-distilled example" in p.note()
    p = plan_mix(5, 5, 0.0)
    assert p.reference_used == 0 and "reference_fraction 0" in p.note()
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        plan_mix(5, 5, 1.0)


def _rec(pid: str, idx: int, kept: bool = True, source: str = "ref") -> dict:
    return {"prompt_id": pid, "sample_idx": idx, "kept": kept, "source": source, "type": "training" if kept else
            "generation", "training": {"messages": []}, "meta": {}, "lek_score": float(idx % 7)}


def test_select_references_is_seeded_spread_over_probes_and_never_duplicates() -> None:
    recs = [_rec(f"P{p}", 1000 + s) for p in range(4) for s in range(5)]
    a = select_references(recs, 8, seed=3)
    assert a == select_references(list(recs), 8, seed=3)  # deterministic
    assert len(a) == 8 and len({(r["prompt_id"], r["sample_idx"]) for r in a}) == 8
    per_probe = {p: sum(r["prompt_id"] == p for r in a) for p in ("P0", "P1", "P2", "P3")}
    assert set(per_probe.values()) == {2}  # round-robin: 2 per probe
    assert [recs.index(r) for r in a] == sorted(recs.index(r) for r in a)  # input order
    assert select_references(recs, 8, seed=4) != a  # another seed, another choice
    assert len(select_references(recs, 100, seed=0)) == 20  # at most what exists
    assert select_references(recs, 0) == []


def test_apply_mix_marks_used_and_drops_the_rest_from_training() -> None:
    recs = [_rec(f"P{p}", s, kept=s != 1, source="self") for p in range(4) for s in range(3)]  # 8 kept
    recs += [_rec(f"P{p}", 1000 + s) for p in range(4) for s in range(3)]  # 12 kept references
    recs.append(_rec("P0", 1009, kept=False))
    plan = apply_mix(recs, 0.3, seed=0)
    assert (plan.self_used, plan.reference_used) == (8, 3)  # 3/11 = 27.3% beats 4/12 = 33.3%
    used = [r for r in recs if r["used"]]
    assert len(used) == 11 and all(r["type"] == "training" for r in used)
    dropped = [r for r in recs if r.get("mix_dropped")]
    assert len(dropped) == 9 and all(r["type"] == "generation" and "training" not in r and "meta" not in r
                                     for r in dropped)
    assert all(not r["used"] for r in recs if not r["kept"])


# ----------------------------------------------------------------------------------------- checks


def test_check_parameters_names_each_bad_field() -> None:
    ok = {"reference_models": ["embedded:gemma3-270m"], "reference_samples": 10, "reference_fraction": 0.3,
          "reference_threshold": None}
    assert check_parameters(ok) == []
    bad = {"reference_models": ["embedded:nope", "embedded:gemma3-270m", "embedded:gemma3-270m", "ftp:x"],
           "reference_samples": -1, "reference_fraction": 1.0, "reference_threshold": "high"}
    fields = {p.field: p.message for p in check_parameters(bad)}
    assert set(fields) == {"reference_models[0]", "reference_models[2]", "reference_models[3]",
                           "reference_samples", "reference_fraction", "reference_threshold"}
    assert "unknown embedded model" in fields["reference_models[0]"]
    assert "listed twice" in fields["reference_models[2]"] and "'ftp:x'" in fields["reference_models[3]"]
    assert "[0, 1)" in fields["reference_fraction"] and ">= 0" in fields["reference_samples"]
    assert [p.field for p in check_parameters({"reference_models": "embedded:gemma3-270m"})] == ["reference_models"]
    assert [p.field for p in check_parameters({"reference_models": ["embedded:gemma3-270m"],
                                               "reference_samples": 0})] == ["reference_samples"]
    assert check_parameters({"reference_models": ["openai:m@http://127.0.0.1:8080/v1"]}) == []
    assert check_parameters({"reference_fraction": -0.1})[0].field == "reference_fraction"


def test_distill_settings_refuse_bad_reference_values() -> None:
    from lekutils.tasks.distill import DistillSettings

    with pytest.raises(ValueError, match="reference_fraction"):
        DistillSettings(phase=2, reference_models=("x",), reference_fraction=1.5)
    with pytest.raises(ValueError, match="reference_samples"):
        DistillSettings(phase=2, reference_samples=-2)
    s = DistillSettings(phase=2, reference_models=["a", "b"], keep_threshold=3.0)
    assert s.reference_models == ("a", "b") and s.for_reference("a").keep_threshold == 3.0
    assert DistillSettings(phase=2, reference_threshold=5).for_reference("a").keep_threshold == 5.0


def test_slug_and_paths_are_unique_per_spec(tmp_path: Path) -> None:
    a = augment.reference_raw_path(tmp_path / "raw.jsonl", "openai:gemma-3-27b@http://10.0.0.2:8080/v1")
    b = augment.reference_raw_path(tmp_path / "raw.jsonl", "openai:gemma-3-27b@http://10.0.0.3:8080/v1")
    assert a != b and a.name.startswith("raw.ref-gemma-3-27b-") and "/" not in a.name[4:]
    assert augment.sample_index(0, 3) == REFERENCE_INDEX_BASE + 3 and augment.sample_index(1, 0) == 2000


# ----------------------------------------------------------------------------------------- distillation


@pytest.fixture(scope="module")
def engines():
    from test_distill import tiny_engine

    return tiny_engine(seed=0), tiny_engine(seed=7)


def _settings(**kw):
    from test_distill import settings

    base = {"phase": 2, "samples": 4, "reference_models": ("tiny-reference",), "reference_samples": 3,
            "reference_fraction": 0.3, "keep_threshold": -100.0}
    return settings(**{**base, **kw})


def test_distill_with_reference_model_mixes_records_and_summarises(tmp_path: Path, engines) -> None:
    from test_distill import make_probes

    from lekutils.tasks.distill import distill, generation_records, read_summary
    from lekutils.tasks.extract import extract

    own, ref = engines
    probes = make_probes(5)
    raw = tmp_path / "run" / "distill" / "phase2" / "raw.jsonl"
    s = _settings()
    summary = distill(probes, raw, s, engine=own, reference_engines={"tiny-reference": ref})
    recs = generation_records(raw)
    assert len(recs) == 5 * 4 + 5 * 3
    refs = [r for r in recs if r["source"] == "tiny-reference"]
    selfs = [r for r in recs if r["source"] == "self"]
    assert len(refs) == 15 and len(selfs) == 20
    assert {r["sample_idx"] for r in refs} == {1000, 1001, 1002} and all(r["model"] == "tiny-reference" for r in refs)
    assert all(r["source_model"] == "tiny-reference" and r["adapter"] is None for r in refs)
    assert all(r["source_model"] == "tiny-random" for r in selfs)
    # threshold -100: everything kept; 20 self + round(20 * 3/7) = 9 references (9/29 = 31.0%)
    mix = summary["mix"]
    assert (mix["self_used"], mix["reference_used"], mix["reference_kept"]) == (20, 9, 15)
    assert mix["achieved_fraction"] == round(9 / 29, 4) and mix["limited_by"] == "self"
    used_refs = [r for r in refs if r["used"]]
    assert len(used_refs) == 9 and all(r["type"] == "training" and r["meta"]["source"] == "tiny-reference"
                                       for r in used_refs)
    assert {r["prompt_id"] for r in used_refs} == {p.id for p in probes}  # spread over the probes
    by = {x["source"]: x for x in summary["sources"]}
    assert (by["self"]["generated"], by["self"]["kept"], by["self"]["used"]) == (20, 20, 20)
    assert (by["tiny-reference"]["generated"], by["tiny-reference"]["used"]) == (15, 9)
    assert by["self"]["n"] == 20 and by["self"]["ci_low"] is not None and by["tiny-reference"]["median"] is not None
    assert summary["total_used"] == 29 and read_summary(raw)["mix"] == mix
    # the reference's work file is its own store
    work = list(raw.parent.glob("raw.ref-tiny-reference-*.partial.jsonl"))
    assert len(work) == 1 and len(work[0].read_text().splitlines()) == 15
    # extraction: dedup per (probe, source), the mix reaches the split
    res = extract(raw, tmp_path / "data", dedup="all", near_dup_threshold=1.0, valid_fraction=0.1, seed=0)
    assert res.source_counts()["tiny-reference"] + res.source_counts()["self"] == len(res.train) + len(res.valid)
    lines = [json.loads(x) for x in (tmp_path / "data" / "train.jsonl").read_text().splitlines()]
    assert len(lines) == len(res.train)
    # same inputs: nothing regenerated, the file kept as it is
    before = raw.read_bytes()
    again = distill(probes, raw, s, engine=None, reference_engines={})  # no engine needed: all stored
    assert again == read_summary(raw) and raw.read_bytes() == before
    # another fraction re-mixes without generating
    again = distill(probes, raw, _settings(reference_fraction=0.5), engine=None, reference_engines={},
                    stale="replace")
    assert again["mix"]["reference_used"] == 15 and again["mix"]["limited_by"] == "references"
    _check_report(tmp_path, raw)


def _check_report(tmp_path: Path, raw: Path) -> None:
    """The report's table and figure of scores per source (phase 1: a file from before the augmentation)."""
    from lekutils.report.sources import write_distill_sources

    old = tmp_path / "run" / "distill" / "phase1" / "raw.jsonl"
    old.parent.mkdir(parents=True)
    lines = [json.loads(x) for x in raw.read_text().splitlines()]
    lines = [{k: v for k, v in r.items() if k not in ("source", "source_model", "used")} for r in lines
             if r.get("type") in ("config", "summary") or r.get("source") == "self"]
    old.write_text("".join(json.dumps(r) + "\n" for r in lines))
    table, fig = write_distill_sources(tmp_path / "run", [tmp_path / "figs"], dpi=50)
    assert list(zip(table["phase"], table["source"], strict=True)) == [(1, "self"), (2, "self"), (2, "tiny-reference")]
    row = table[(table["phase"] == 2) & (table["source"] == "tiny-reference")].iloc[0]
    assert (row["generated"], row["kept"], row["used"], row["n"]) == (15, 15, 15, 15)
    assert row["label"] == "reference: tiny-reference" and row["used_share"] == round(15 / 35, 4)
    assert row["ci_low"] <= row["mean"] <= row["ci_high"] and row["median"] is not None
    assert table.iloc[0]["used"] == 20  # no "used" field: the kept answers were the training set
    csv = (tmp_path / "run" / "tables" / "distill_sources.csv").read_text().splitlines()
    assert len(csv) == 4 and csv[0].startswith("phase,source,label,source_model,generated,kept,used")
    for d in (tmp_path / "run" / "figures", tmp_path / "figs"):
        assert (d / "distill_sources.png").stat().st_size > 1000 and (d / "distill_sources.pdf").is_file()
    assert fig.axes[0].get_legend() is not None
    from lekutils.report.curriculum import curriculum_volume_table

    vol = curriculum_volume_table(tmp_path / "run").set_index("phase")
    assert (vol.loc[2, "planned_generations"], vol.loc[2, "generated"]) == (35, 35)  # 5 x (4 + 3)


def test_reference_threshold_and_no_self_kept(tmp_path: Path, engines) -> None:
    from test_distill import make_probes

    from lekutils.tasks.distill import NothingKeptError, distill

    own, ref = engines
    probes = make_probes(3)
    raw = tmp_path / "raw.jsonl"
    with pytest.raises(NothingKeptError, match="reference_fraction") as e:
        distill(probes, raw, _settings(keep_threshold=1000.0, reference_threshold=-100.0), engine=own,
                reference_engines={"tiny-reference": ref})
    assert e.value.summary["mix"]["reference_kept"] == 9 and e.value.summary["total_used"] == 0


def test_runner_names_the_curriculum_file_and_field_of_bad_reference_values(tmp_path: Path, repo_root: Path) -> None:
    import shutil

    import yaml

    from lekutils.core.errors import ParameterError
    from lekutils.runner.profile import load_pipeline, resolve

    shutil.copytree(repo_root / "params" / "smoke", tmp_path / "smoke")
    table = tmp_path / "smoke" / "curriculum.yaml"
    doc = yaml.safe_load(table.read_text())
    doc["phases"][2]["distill"].update({"reference_models": ["embedded:no-such-model"], "reference_samples": -3,
                                        "reference_fraction": 1.0})
    table.write_text(yaml.safe_dump(doc))
    ex = next(e for e in load_pipeline("smoke", tmp_path) if e.name == "10_self_distill_phase2")
    with pytest.raises(ParameterError) as e:
        resolve([ex], "smoke")
    msg = str(e.value)
    origin = f"{table} phases[2].distill"
    assert "'reference_models[0]': model spec 'embedded:no-such-model': unknown embedded model" in msg
    assert msg.count(f"(from {origin})") == 3 and "'reference_samples'" in msg and "'reference_fraction'" in msg
    ok = resolve([ex], "smoke", overrides={"reference_fraction": 0.3, "reference_samples": 2,
                                           "reference_models": ["embedded:gemma3-270m"]})
    assert ok[0].parameters["reference_models"] == ["embedded:gemma3-270m"]


KILL_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from lekutils.core.blas import reexec_with_fast_blas
reexec_with_fast_blas()
from test_distill import make_probes, settings, tiny_engine
from lekutils.tasks.distill import distill
slow = float(sys.argv[2])
own, ref = tiny_engine(batch_size=4), tiny_engine(batch_size=4, seed=7)
plain = ref.generate


def generate(*a, progress=None, **k):  # only the reference model is slowed: the kill lands in its task
    def tick(n):
        time.sleep(slow)
        if progress is not None:
            progress(n)
    return plain(*a, progress=tick, **k)


ref.generate = generate
s = distill(make_probes(6), sys.argv[1], settings(phase=2, samples=2, batch_size=4, chunk_size=None, store_every=2,
            keep_threshold=-100.0, reference_models=("tiny-reference",), reference_samples=4,
            reference_fraction=0.3), engine=own, reference_engines={{"tiny-reference": ref}})
print("DONE", s["total_generated"], s["mix"]["self_used"], s["mix"]["reference_used"])
"""


def test_sigkill_in_the_reference_task_then_resume_equals_uninterrupted(tmp_path: Path, repo_root: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from lekutils.tasks.distill import generation_records, read_summary, record_key

    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(tests=str(Path(__file__).parent)))

    def run(out: Path, slow: float) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(script), str(out), str(slow)], cwd=repo_root,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    ref_raw, killed = tmp_path / "ref" / "raw.jsonl", tmp_path / "killed" / "raw.jsonl"
    out = run(ref_raw, 0.0).communicate(timeout=300)[0]
    assert "DONE 36 12 5" in out, out  # 12 self + 24 reference generations; 5/17 = 29.4% references
    proc = run(killed, 0.3)
    deadline = time.monotonic() + 120
    work: list[Path] = []
    while proc.poll() is None and time.monotonic() < deadline:
        work = list(killed.parent.glob("raw.ref-*.partial.jsonl"))
        if work and work[0].read_bytes().count(b"\n") >= 4:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"run ended before the kill:\n{proc.stdout.read()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    stored = work[0].read_bytes().count(b"\n")
    assert 4 <= stored < 24 and not killed.exists()
    assert killed.with_name("raw.partial.jsonl").read_bytes().count(b"\n") == 12  # self task finished first
    out = run(killed, 0.0).communicate(timeout=300)[0]
    assert "DONE 36 12 5" in out, out
    keys = [tuple(json.loads(x)[k] for k in ("key", "sample_idx")) for x in work[0].read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 24  # nothing lost, nothing stored twice
    a, b = generation_records(ref_raw), generation_records(killed)
    ka = {record_key(r): (r["response"], r["lek_score"], r["kept"], r["used"], r["source"]) for r in a}
    kb = {record_key(r): (r["response"], r["lek_score"], r["kept"], r["used"], r["source"]) for r in b}
    assert ka == kb and len(ka) == 36
    assert read_summary(ref_raw)["mix"] == read_summary(killed)["mix"]
    assert read_summary(ref_raw)["sources"] == read_summary(killed)["sources"]
