"""Loading A/B results (ours and upstream-shaped) into the long table; models table; gate tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lekutils.core.errors import DataError
from lekutils.report.load import (
    V2_SIGNALS,
    is_v1_heuristic,
    load_gates,
    load_models,
    load_results,
    resolve_paths,
)
from lekutils.scoring import score

V1_HEUR = {"compliance_markers": 0, "formulaic_preamble": 0, "first_person": 0, "creative_form": 2,
           "engagement_depth": 1, "emotional_register": 0, "degeneration": 0, "empty_broken": 0, "lek_score": 8.0}
TEXTS = {
    "P1": "However, the tension here is real. For example, Alice in Berlin considers consent and dignity.",
    "P2": "I cannot help with that. As an AI I must decline.",
    "P3": "Imagine a river, like a memory. Picture the community deciding together? Both sides and more.",
}

MODELS_YAML = """
version: 1
probe_sets:
  - {file: "ab-p100-*", name: P100}
  - {file: "ab-base-*", name: P20}
models:
  - {id: toy-base, display: Toy-1B, family: Toy, version: "1", size: 1B, size_b: 1, tuned: false,
     match: ["/models/toy-base", "ab-base-toy-mlxlm"]}
  - {id: toy-lek, display: LEK-Toy-1B, family: Toy, version: "1", size: 1B, size_b: 1, tuned: true, base: toy-base,
     match: ["org/LEK-Toy"]}
  - {id: "embedded:tiny", display: Tiny, family: Tiny, version: "1", size: 1M, size_b: 0.001, tuned: false}
"""


def _upstream_v1_file(path: Path, model: str, texts: dict[str, str], v1: float = 8.0) -> Path:
    lines = [{"type": "probe", "id": pid, "category": "cat" + pid[-1], "prompt": f"prompt {pid}",
              "conditions": {c: {"response": t + (" Kernel." if c == "json" else ""), "lek_score": v1 + i,
                                 "heuristic": dict(V1_HEUR, lek_score=v1 + i), "chars": len(t)}
                             for i, c in enumerate(("baseline", "json"))}}
             for pid, t in texts.items()]
    lines.append({"type": "summary", "model": model, "total_probes": len(texts), "conditions": []})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def _our_file(path: Path, model: str, adapter: str | None, texts: dict[str, str], planted: float) -> Path:
    """Our shape: v2 stored, scorer named; planted stored scores prove stored values are kept."""
    lines = []
    for pid, t in texts.items():
        conds = {}
        for c in ("baseline", "txt"):
            h = score(t)
            h["lek_score"] = planted
            conds[c] = {"response": t, "lek_score": planted, "heuristic": h, "chars": len(t), "condition": c}
        lines.append({"type": "probe", "id": pid, "category": "cat", "prompt": "p", "conditions": conds,
                      "scorer": "v2", "model": model, "adapter": {"path": adapter} if adapter else None,
                      "probe_set": "eval"})
    lines.append({"type": "summary", "model": model, "probe_set": "eval", "scorer": "v2"})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@pytest.fixture()
def models_yaml(tmp_path: Path) -> Path:
    p = tmp_path / "models.yaml"
    p.write_text(MODELS_YAML)
    return p


def test_v1_detection() -> None:
    assert is_v1_heuristic(V1_HEUR)
    assert is_v1_heuristic(None)
    assert not is_v1_heuristic(score("Some text here."))


def test_resolve_paths_placeholders_globs_and_missing_upstream(tmp_path: Path) -> None:
    (tmp_path / "run" / "ab").mkdir(parents=True)
    (tmp_path / "up" / "benchmarks").mkdir(parents=True)
    for name in ("run/ab/b.jsonl", "run/ab/a.jsonl", "run/ab/a.partial.jsonl", "up/benchmarks/ab-x.jsonl",
                 "up/benchmarks/other.jsonl"):
        (tmp_path / name).write_text("")
    got = resolve_paths(["{run_dir}/ab/*.jsonl", "{upstream}/benchmarks/ab-*.jsonl", "run/ab/a.jsonl"],
                        run_dir="run", upstream=tmp_path / "up", root=tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in got] == [
        "run/ab/a.jsonl", "run/ab/b.jsonl", "up/benchmarks/ab-x.jsonl"]  # de-duplicated, no work files
    assert resolve_paths(["{upstream}/benchmarks/ab-*.jsonl"], upstream=tmp_path / "absent", root=tmp_path) == []


def test_load_results_rescores_v1_and_keeps_stored_v2(tmp_path: Path, models_yaml: Path) -> None:
    up = _upstream_v1_file(tmp_path / "ab-base-toy-mlxlm.jsonl", "/models/toy-base", TEXTS)
    ours = _our_file(tmp_path / "tiny.jsonl", "embedded:tiny", None, TEXTS, planted=-99.0)
    df = load_results([str(up), str(ours)], models=models_yaml)
    assert len(df) == 12
    assert set(V2_SIGNALS) <= set(df.columns)
    v1 = df[df["source_file"] == up.name]
    assert v1["rescored"].all() and (v1["stored_scorer"] == "v1").all()
    assert (v1["model"] == "Toy-1B").all() and (v1["probe_set"] == "P20").all()
    for r in v1.itertuples():
        expect = score(r.response)
        assert r.score == expect["lek_score"]
        assert r.nuance == expect["nuance"] and r.specificity == expect["specificity"]
    assert sorted(v1["stored_v1"].unique()) == [8.0, 9.0]  # baseline 8, json 9 as stored
    mine = df[df["source_file"] == ours.name]
    assert not mine["rescored"].any() and mine["stored_v1"].isna().all()
    assert (mine["score"] == -99.0).all()  # stored v2 values are kept, not recomputed
    assert (mine["model"] == "Tiny").all() and (mine["probe_set"] == "eval").all()
    assert list(df["condition"].cat.categories)[0] == "baseline"
    # rows keep file order inside a group (published means are sums in record order)
    assert list(v1[v1["condition"] == "baseline"]["probe_id"]) == list(TEXTS)


def test_adapters_become_tuned_models_with_their_base(tmp_path: Path, models_yaml: Path) -> None:
    base = _our_file(tmp_path / "tiny.jsonl", "embedded:tiny", None, TEXTS, planted=10.0)
    tuned = _our_file(tmp_path / "tiny+phase4.jsonl", "embedded:tiny", "runs/smoke/adapters/phase4", TEXTS, 12.5)
    df = load_results([base, tuned], models=models_yaml)
    t = df[df["tuned"]]
    assert set(t["model"]) == {"Tiny+phase4"} and set(t["base_model"]) == {"Tiny"}
    assert set(t["adapter"]) == {"phase4"}
    from lekutils.report.tables import finetune_effect

    fe = finetune_effect(df, n_boot=200)
    assert len(fe) == 1
    assert (fe.loc[0, "tuned_model"], fe.loc[0, "base_model"], fe.loc[0, "delta"]) == ("Tiny+phase4", "Tiny", 2.5)


def test_unknown_model_falls_back_to_its_name(tmp_path: Path, models_yaml: Path) -> None:
    f = _upstream_v1_file(tmp_path / "ab-p100-mystery-mlxlm.jsonl", "someorg/Mystery-7B-4bit", TEXTS)
    df = load_results(f, models=models_yaml)
    assert set(df["model"]) == {"Mystery-7B-4bit"} and set(df["family"]) == {"unknown"}
    assert set(df["probe_set"]) == {"P100"}
    g = _upstream_v1_file(tmp_path / "unnamed.jsonl", "x/y", {"P1": "text one"})
    assert set(load_results(g, models=models_yaml)["probe_set"]) == {"P1"}  # P<number of probes>


def test_bad_inputs_name_file_and_line(tmp_path: Path, models_yaml: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps({"type": "probe", "id": "P1", "conditions": {"baseline": {"lek_score": 1.0}}}) + "\n")
    with pytest.raises(DataError) as e:
        load_results(f, models=models_yaml)
    assert "bad.jsonl" in str(e.value) and "line 1" in str(e.value) and "response" in str(e.value)
    with pytest.raises(DataError, match="no A/B result file"):
        load_results([str(tmp_path / "none-*.jsonl")], models=models_yaml)


def test_models_table(models_yaml: Path, tmp_path: Path) -> None:
    t = load_models(models_yaml)
    assert t.lookup("/models/toy-base").display == "Toy-1B"
    assert t.lookup("whatever", "ab-base-toy-mlxlm").display == "Toy-1B"  # by file name
    assert t.lookup("org/LEK-Toy").tuned
    assert t.probe_set_for("ab-p100-x.jsonl") == "P100" and t.probe_set_for("x.jsonl") is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - {id: a}\nprobe_sets:\n  - {file: x}\n")
    with pytest.raises(DataError) as e:
        load_models(bad)
    assert "models[0]" in str(e.value) and "probe_sets[0]" in str(e.value)


def test_shipped_models_table_covers_upstream_and_embedded(repo_root: Path) -> None:
    t = load_models(repo_root / "params" / "models.yaml")
    assert t.lookup("/Volumes/Data/lem/gemma-3-1b-it-base").display == "Gemma3-1B"
    assert t.lookup("/Volumes/Data/lem/gemma-3-27b-it-base").display == "Gemma3-27B"
    assert t.lookup("mlx-community/gemma-3-12b-it-4bit").display == "Gemma3-12B"
    lek = t.lookup("lthn/LEK-Gemma3-1B-layered")
    assert lek.display == "LEK-Gemma3-1B" and lek.tuned and t.by_id(lek.base).display == "Gemma3-1B"
    assert t.lookup("embedded:smollm2-135m-instruct").display == "SmolLM2-135M"
    assert t.lookup("embedded:gemma3-270m").family == "Gemma"
    assert t.probe_set_for("ab-p100-gemma3-12b-mlxlm.jsonl") == "P100"
    assert t.probe_set_for("ab-base-gemma3-12b-mlxlm.jsonl") == "P20"


def test_load_gates_tolerates_shapes(tmp_path: Path) -> None:
    (tmp_path / "adapters" / "phase0").mkdir(parents=True)
    (tmp_path / "adapters" / "phase1").mkdir(parents=True)
    (tmp_path / "adapters" / "phase0" / "gates.json").write_text(json.dumps(
        [{"gate": "average", "value": 20.0, "level": 21.0, "passed": False}]))
    (tmp_path / "adapters" / "phase1" / "gates.json").write_text(json.dumps(
        {"phase": 1, "gates": [{"name": "average", "value": 22.0, "threshold": 21.0, "pass": True},
                               {"gate": "degeneration", "value": 0, "level": 0, "passed": True, "op": "<="}]}))
    g = load_gates(["{run_dir}/adapters/phase*/gates.json"], run_dir=tmp_path)
    assert list(g["phase"]) == [0, 1, 1]
    assert list(g["passed"]) == [False, True, True]
    assert list(g["level"]) == [21.0, 21.0, 0.0]
    assert load_gates([str(tmp_path / "nothing/*.json")]).empty
    (tmp_path / "adapters" / "phase1" / "gates.json").write_text("{broken")
    with pytest.raises(DataError, match="gates.json"):
        load_gates([str(tmp_path / "adapters/phase*/gates.json")])
