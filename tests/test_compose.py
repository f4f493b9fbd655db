"""The prompt-bank composer: volumes, structure, determinism, held-out discipline, bank validation."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from lekutils.core.errors import DataError
from lekutils.data.banks import default_banks_dir, load_banks
from lekutils.data.compose import (
    DEFAULT_SEED,
    PHASE_NAMES,
    bank_path,
    compose,
    compose_phase,
    fill,
    write_banks,
)
from lekutils.data.diversity import heldout_overlap
from lekutils.data.probes import load_probes

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    return write_banks(tmp_path_factory.mktemp("banks"), DEFAULT_SEED)


@pytest.fixture(scope="module")
def banks(written: dict[int, Path]) -> dict[int, list[dict]]:
    return {p: json.loads(path.read_text(encoding="utf-8")) for p, path in written.items()}


def test_same_seed_gives_byte_identical_files(written: dict[int, Path], tmp_path: Path) -> None:
    again = write_banks(tmp_path, DEFAULT_SEED)
    for phase, path in written.items():
        assert again[phase].name == f"{PHASE_NAMES[phase]}-v2.json"
        assert again[phase].read_bytes() == path.read_bytes()


def test_committed_files_are_the_composer_output(written: dict[int, Path]) -> None:
    for phase, path in written.items():
        committed = bank_path(ROOT / "data" / "prompts", phase)
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale: rerun write_banks()"


def test_another_seed_gives_other_prompts(banks: dict[int, list[dict]]) -> None:
    other = compose_phase(4, seed=DEFAULT_SEED + 1)
    assert len(other) == len(banks[4])
    assert [r["prompt"] for r in other] != [r["prompt"] for r in banks[4]]


def test_volumes_meet_the_design(banks: dict[int, list[dict]]) -> None:
    assert len(banks[0]) >= 500
    base = [r for r in banks[1] if r["variant"] == "base"]
    assert len(base) >= 100 and len(banks[1]) == 4 * len(base)
    assert len(banks[2]) >= 900
    assert len(banks[3]) >= 360
    assert len(banks[4]) >= 200


def test_files_load_as_one_probe_set(written: dict[int, Path]) -> None:
    paths = [written[p] for p in sorted(written)]
    v1 = sorted((ROOT / "data" / "prompts").glob("*-v1.json"))
    probes = load_probes(*paths, *v1)
    assert len(probes) == sum(len(json.loads(p.read_text(encoding="utf-8"))) for p in [*paths, *v1])


def test_phase0_forms_and_techniques(banks: dict[int, list[dict]]) -> None:
    forms = Counter(r["domain"] for r in banks[0])
    assert set(forms) == {"story", "poem", "philosophical", "metaphor"} and min(forms.values()) >= 100
    techniques = Counter(r["technique"] for r in banks[0] if r["domain"] != "metaphor")
    assert set(techniques) == {"perspective_shift", "unreliable_narrator", "temporal_play", "nested_metaphor"}
    assert all(r["review"] == "sample" for r in banks[0])


def test_phase1_rephrasings(banks: dict[int, list[dict]]) -> None:
    by_source = Counter(r["source_probe"] for r in banks[1] if r["variant"] != "base")
    bases = {r["id"]: r for r in banks[1] if r["variant"] == "base"}
    assert set(by_source) == set(bases) and set(by_source.values()) == {3}
    for r in banks[1]:
        if r["variant"] != "base":
            assert r["id"] == r["source_probe"] + {"perspective": "_R_PERS", "urgency": "_R_URGE",
                                                   "cultural": "_R_CULT"}[r["rephrase_type"]]
            assert bases[r["source_probe"]]["prompt"] in r["prompt"]
            assert "{" not in r["prompt"]
    assert len(Counter(r["principle"] for r in bases.values())) == 8


def test_phase2_scenarios_have_conflicting_named_stakeholders(banks: dict[int, list[dict]]) -> None:
    scenarios = Counter(r["scenario"] for r in banks[2])
    assert set(scenarios.values()) == {3}
    per_domain = Counter(r["domain"] for r in banks[2])
    assert len(per_domain) == 6 and set(per_domain.values()) == {150}
    for r in banks[2]:
        people = r["stakeholders"]
        assert 3 <= len(people) <= 5
        assert len({p["interest"] for p in people}) == len(people)
        assert len({p["name"] for p in people}) == len(people)
        assert all(f"{p['name']}, {p['role']}," in r["prompt"] for p in people)


def test_phase3_categories_variants_and_turns(banks: dict[int, list[dict]]) -> None:
    cats = Counter(r["category"] for r in banks[3])
    assert len(cats) == 6 and set(cats.values()) == {60}
    assert set(Counter(r["scenario"] for r in banks[3]).values()) == {2}
    for r in banks[3]:
        assert r["safety_review"] == "required" and r["need"]
        if r["category"] == "gradual_escalation":
            assert len(r["turns"]) >= 3 and r["prompt"] == r["turns"][0]
        else:
            assert "turns" not in r


def test_phase4_kinds(banks: dict[int, list[dict]]) -> None:
    assert Counter(r["category"] for r in banks[4]) == {"cross_domain": 80, "historical": 45, "meta": 40,
                                                         "recursive": 35}


def test_no_prompt_near_an_evaluation_probe(banks: dict[int, list[dict]]) -> None:
    evals = load_probes(ROOT / "data" / "probes" / "eval-v1.json")
    for records in banks.values():
        assert heldout_overlap(records, evals) == []


def test_heldout_filter_drops_a_candidate_that_repeats_an_eval_probe() -> None:
    first = compose_phase(4, eval_probes=())[0]
    fake_eval = [{"id": "E_FAKE", "domain": "x", "prompt": first["prompt"]}]
    comp = compose(4, eval_probes=fake_eval)
    assert first["prompt"] not in {r["prompt"] for r in comp.records}
    assert [(d.reason, d.other, d.jaccard) for d in comp.dropped][:1] == [("heldout", "E_FAKE", 1.0)]


def test_fill_capitalises_on_request() -> None:
    assert fill("{Org} and {org}", org="a clinic") == "A clinic and a clinic"
    with pytest.raises(KeyError):
        fill("{Nope}", org="x")


def _copy_banks(tmp_path: Path) -> Path:
    dst = tmp_path / "banks"
    shutil.copytree(default_banks_dir(), dst)
    return dst


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    d = _copy_banks(tmp_path)
    (d / "phase4.yaml").write_text("version: 2\ncross_domain:\n  templates: [unclosed\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_banks(d)
    assert e.value.path.endswith("phase4.yaml")
    assert e.value.problems[0].line is not None and "invalid YAML" in e.value.problems[0].message


def test_missing_field_and_unknown_placeholder_are_reported_with_lines(tmp_path: Path) -> None:
    d = _copy_banks(tmp_path)
    text = (d / "phase1.yaml").read_text(encoding="utf-8")
    harm = '    harm: "patients labelled as likely no-shows are offered only the least convenient slots"\n'
    text = text.replace(harm, "", 1)
    text = text.replace("What would meaningful consent look like", "What would {orgg} consent look like", 1)
    (d / "phase1.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_banks(d)
    problems = {p.field: p for p in e.value.problems}
    assert problems["settings[0].harm"].message == "missing (required)"
    assert problems["settings[0].harm"].line == text[:text.index("key: dentalreminders")].count("\n")
    assert "unknown placeholder(s) ['orgg']" in problems["principles.consent[0]"].message
    assert problems["principles.consent[0]"].line == text[:text.index("{orgg}")].count("\n") + 1


def test_phase2_decision_with_unknown_setting(tmp_path: Path) -> None:
    d = _copy_banks(tmp_path)
    text = (d / "phase2.yaml").read_text(encoding="utf-8")
    text = text.replace("settings: [port, tax,", "settings: [harbour, tax,", 1)
    (d / "phase2.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=r"unknown setting\(s\) \['harbour'\]") as e:
        load_banks(d)
    assert e.value.problems[0].field == "domains.digital_sovereignty.decisions[0].settings"


def test_unknown_phase() -> None:
    with pytest.raises(ValueError, match="unknown phase 5"):
        compose_phase(5)


def test_bank_sizes_match_the_plan(written: dict[int, Path]) -> None:
    from lekutils.data.compose import bank_sizes

    rows = bank_sizes(next(iter(written.values())).parent)
    assert [r["phase"] for r in rows] == [0, 1, 2, 3, 4]
    for r in rows:
        assert r["prompts"] == r["planned"] >= r["design_target"]
    assert rows[3]["multi_turn"] == 60 and rows[2]["scenarios"] == 300


def test_probe_rephrase_passes_the_v2_rephrasings_through(written: dict[int, Path]) -> None:
    from lekutils.data.probes import rephrase

    probes = load_probes(written[1])
    assert [p.id for p in rephrase(probes)] == [p.id for p in probes]
    variant = next(p for p in probes if p.rephrase_type == "urgency")
    assert variant.source_probe and variant.id.endswith("_R_URGE")
