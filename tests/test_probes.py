"""Probe sets: loading upstream seeds, validation errors, merging, hashing, rephrasing, shipped data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lekutils.core.errors import DataError
from lekutils.data.probes import (
    REPHRASE_SUFFIXES,
    REPHRASE_TEMPLATES,
    Probe,
    build_probe_sets,
    counts_by,
    load_probes,
    probes_hash,
    rephrase,
    save_probes,
)

P_FILES = ["P01-P20.json", "P21-P40.json", "P41-P60.json", "P61-P80.json", "P81-P100.json"]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_upstream_p100_loads_and_rephrases_to_400(upstream: Path) -> None:
    probes = load_probes(*(upstream / "seeds" / f for f in P_FILES))
    assert len(probes) == 100 and len({p.id for p in probes}) == 100
    p11 = next(p for p in probes if p.id == "P11_HYPNOS_DREAM")
    assert p11.category == "hypnos" and p11.domain == "Hypnos"
    reph = rephrase(probes)
    assert len(reph) == 400
    assert reph[:100] == probes
    variants = reph[100:]
    assert [v.id for v in variants[:3]] == [probes[0].id + s for s in ("_R_PERS", "_R_URGE", "_R_CULT")]
    for v in variants:
        src = next(p for p in probes if p.id == v.source_probe)
        assert v.prompt.endswith("\n\n" + src.prompt)
        assert v.prompt[: -len(src.prompt) - 2] in REPHRASE_TEMPLATES[v.rephrase_type]
        assert v.id == src.id + REPHRASE_SUFFIXES[v.rephrase_type] and v.category == src.category
    # Deterministic, and the template choice actually varies across probes.
    assert [p.prompt for p in rephrase(probes)] == [p.prompt for p in reph]
    assert len({v.prompt.split("\n\n")[0] for v in variants if v.rephrase_type == "urgency"}) > 1


def test_categories_match_upstream_ab_records(upstream: Path) -> None:
    from lekutils.tasks.abtest import load_ab

    probes = {p.id: p for p in load_probes(*(upstream / "seeds" / f for f in P_FILES))}
    recs = load_ab(upstream / "benchmarks" / "ab-p100-gemma3-12b-mlxlm.jsonl")
    matched = [r for r in recs if r["id"] in probes]
    assert len(matched) == 100
    assert all(probes[r["id"]].category == r["category"] for r in matched)


def test_upstream_rephrased_file_keeps_variant_fields(upstream: Path) -> None:
    probes = load_probes(upstream / "seeds" / "P01-P100-rephrased.json")
    assert len(probes) == 404
    v = next(p for p in probes if p.id == "P01_IDENTITY_WHISTLEBLOWER_R_CULT")
    assert v.source_probe == "P01_IDENTITY_WHISTLEBLOWER" and v.rephrase_type == "cultural"
    assert v.category == "identity"
    assert len(rephrase(probes)) == 404  # variants already present are not generated again


def test_jsonl_category_and_extra_keys_kept(tmp_path: Path) -> None:
    f = _write(tmp_path, "a.jsonl",
               '{"id": "A1", "category": "Silent Network", "prompt": "p1", "weight": 2}\n\n'
               '{"id": "A2", "domain": "X", "prompt": "p2", "creative": true}\n')
    a1, a2 = load_probes(f)
    assert a1.category == "silent network" and a1.extra == {"weight": 2}
    assert a2.category == "x" and a2.extra["creative"] is True and a2.to_dict()["domain"] == "X"


def test_bad_json_names_line_and_column(tmp_path: Path) -> None:
    f = _write(tmp_path, "bad.json", '[\n  {"id": "A", "domain": "d", "prompt": "p"},\n  {"id": "B",, }\n]\n')
    with pytest.raises(DataError) as e:
        load_probes(f)
    (prob,) = e.value.problems
    assert prob.line == 3 and prob.column is not None and str(f) in str(e.value)
    g = _write(tmp_path, "bad.jsonl", '{"id": "A", "domain": "d", "prompt": "p"}\n{oops\n{"id": "C"}\n')
    with pytest.raises(DataError) as e:
        load_probes(g)
    assert [(p.line, p.field) for p in e.value.problems] == [(2, None), (3, "prompt"), (3, "domain")]


def test_all_problems_of_a_file_reported_together(tmp_path: Path) -> None:
    recs = [
        {"id": "A", "domain": "d", "prompt": "fine"},
        {"id": "B", "domain": "d"},                     # missing prompt
        {"id": "C", "domain": "d", "prompt": "   "},    # empty prompt
        {"id": 7, "domain": "d", "prompt": "x"},        # non-string id
        {"id": "E", "domain": ["d"], "prompt": "x"},    # non-string domain
        {"id": "A", "domain": "d", "prompt": "again"},  # duplicate in file
        "not an object",
    ]
    f = _write(tmp_path, "many.json", json.dumps(recs, indent=1))
    with pytest.raises(DataError) as e:
        load_probes(f)
    got = {(p.field, p.line) for p in e.value.problems}
    lines = [n for n, line in enumerate(f.read_text().splitlines(), 1) if line.startswith(" {") or line.startswith(' "')]
    assert ("prompt", lines[1]) in got and ("prompt", lines[2]) in got
    assert ("id", lines[3]) in got and ("domain", lines[4]) in got and ("id", lines[5]) in got
    assert (None, lines[6]) in got
    assert len(e.value.problems) == 6
    assert "first on line" in str(e.value)


def test_duplicate_ids_across_files_name_both(tmp_path: Path) -> None:
    a = _write(tmp_path, "a.json", '[{"id": "X", "domain": "d", "prompt": "p"}]')
    b = _write(tmp_path, "b.jsonl", '{"id": "Y", "domain": "d", "prompt": "p"}\n{"id": "X", "domain": "d", "prompt": "q"}\n')
    with pytest.raises(DataError) as e:
        load_probes(a, b)
    assert e.value.path == str(b) and str(a) in str(e.value) and e.value.problems[0].line == 2


def test_not_a_list_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="JSON list"):
        load_probes(_write(tmp_path, "obj.json", '{"probes": []}'))
    with pytest.raises(DataError, match="no probes"):
        load_probes(_write(tmp_path, "empty.jsonl", "\n"))
    with pytest.raises(DataError, match="cannot read"):
        load_probes(tmp_path / "missing.json")


def test_hash_is_content_hash(tmp_path: Path) -> None:
    ps = [Probe("A", "d", "p"), Probe("B", "d", "q")]
    h = probes_hash(ps)
    assert h.startswith("sha256:") and len(h) == 71
    assert probes_hash([Probe("A", "d", "p"), Probe("B", "d", "q")]) == h
    assert probes_hash([Probe("A", "d", "p"), Probe("B", "d", "q!")]) != h
    assert probes_hash(ps[::-1]) != h
    out = save_probes(rephrase(ps), tmp_path / "sub" / "set.json")
    back = load_probes(out)
    assert probes_hash(back) == probes_hash(rephrase(ps)) and len(back) == 8


def test_shipped_eval_set(repo_root: Path) -> None:
    probes = load_probes(repo_root / "data" / "probes" / "eval-v1.json")
    assert len(probes) >= 40 and len(counts_by(probes)) >= 8
    dream = next(p for p in probes if p.id == "E11_HYPNOS_DREAM")
    assert dream.extra.get("creative") is True
    assert all(p.id.startswith("E") for p in probes)


def test_shipped_creative_set_has_no_ethics(repo_root: Path) -> None:
    probes = load_probes(repo_root / "data" / "prompts" / "creative-v1.json")
    assert len(probes) >= 50
    assert set(counts_by(probes)) == {"story", "poem", "philosophical", "metaphor"}
    banned = ("ethic", "moral", "harm", "consent", "privacy", "surveil", "rights", "justice", "should you")
    assert not [p.id for p in probes if any(w in p.prompt.lower() for w in banned)]


def test_shipped_data_not_copied_from_upstream(upstream: Path, repo_root: Path) -> None:
    theirs = {p.prompt for p in load_probes(upstream / "seeds" / "P01-P100-rephrased.json")}
    ours = load_probes(repo_root / "data" / "probes" / "eval-v1.json",
                       repo_root / "data" / "prompts" / "creative-v1.json")
    assert not [p.id for p in ours if p.prompt in theirs]
    frames = {t for ts in REPHRASE_TEMPLATES.values() for t in ts}
    up_frames = {p.split("\n\n")[0] for p in theirs if "\n\n" in p}
    assert not frames & up_frames


def test_build_probe_sets_writes_sets_and_index(tmp_path: Path, repo_root: Path) -> None:
    ev = repo_root / "data" / "probes" / "eval-v1.json"
    out = tmp_path / "probes"
    index = build_probe_sets({"eval": [ev], "gone": [tmp_path / "nope.json"]}, out,
                             rephrase_sets=["eval"], skip_missing=True)
    assert index["skipped"] == {"gone": [str(tmp_path / "nope.json")]}
    n = len(load_probes(ev))
    assert index["sets"]["eval"]["n"] == n and index["sets"]["eval-rephrased"]["n"] == 4 * n
    assert json.loads((out / "index.json").read_text()) == index
    back = load_probes(out / "eval-rephrased.json")
    assert probes_hash(back) == index["sets"]["eval-rephrased"]["hash"]
    assert index["sets"]["eval"]["sources"][str(ev)].startswith("sha256:")


def test_build_probe_sets_writes_nothing_on_error(tmp_path: Path, repo_root: Path) -> None:
    bad = _write(tmp_path, "bad.json", '[{"id": "A", "domain": "d"}]')
    out = tmp_path / "probes"
    with pytest.raises(DataError, match="prompt"):
        build_probe_sets({"eval": [repo_root / "data" / "probes" / "eval-v1.json"], "bad": [bad]}, out)
    assert not out.exists()
    with pytest.raises(DataError, match="cannot read"):
        build_probe_sets({"x": [tmp_path / "missing.json"]}, out)
    assert not out.exists()


def test_every_shipped_probe_file_loads_and_is_documented(repo_root: Path) -> None:
    files = sorted((repo_root / "data").glob("p*/*.json"))
    assert len(files) >= 2
    readme = (repo_root / "data" / "README.md").read_text()
    for f in files:
        assert load_probes(f), f
        assert "-v" in f.stem and f"`{f.parent.name}/{f.name}`" in readme, f
