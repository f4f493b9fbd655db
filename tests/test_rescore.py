"""Re-scoring result files: the ``score`` command, stored values kept, bad input rejected with nothing written."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from lekutils.core.errors import DataError
from lekutils.core.jsonl import read_jsonl
from lekutils.runner import cmd_score as cli_score
from lekutils.scoring import get_scorer, score
from lekutils.scoring.rescore import output_path, read_ab_lines, rescore_file, rescore_records


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli_score.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["score", *argv])
    return args.func(args)


def our_record(pid: str, texts: dict[str, str], scorer: str = "v2") -> dict:
    conds = {c: {"response": t, "lek_score": score(t, scorer)["lek_score"], "heuristic": score(t, scorer),
                 "chars": len(t)} for c, t in texts.items()}
    return {"type": "probe", "id": pid, "category": "x", "prompt": "p", "conditions": conds,
            "scorer": scorer, "scorer_version": get_scorer(scorer).version}


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


TEXTS = {"baseline": "I feel that, however, it depends on the community? " * 3,
         "json": "Sure! Consider that 3 stakeholders, such as Alice and Bob, disagree.\n\n# Why\n\nBecause."}


def test_cli_rescores_our_file_with_another_scorer(tmp_path, capsys):
    src = write_lines(tmp_path / "ab-ours.jsonl", [our_record("P1", TEXTS), our_record("P2", TEXTS),
                                                   {"type": "summary", "conditions": []}])
    out = tmp_path / "out.jsonl"
    assert run_cli(str(src), "--scorer", "v2_distill", "-o", str(out)) == 0
    printed = capsys.readouterr().out
    assert "ab-ours.jsonl" in printed and "baseline" in printed and f"wrote {out}" in printed
    lines = read_jsonl(out)
    assert [r["type"] for r in lines] == ["probe", "probe", "summary"]
    c = lines[0]["conditions"]["json"]
    assert c["scorer"] == "v2_distill" and c["scorer_version"] == get_scorer("v2_distill").version
    assert c["heuristic"] == score(TEXTS["json"], "v2_distill") and c["lek_score"] == c["heuristic"]["lek_score"]
    assert c["stored_scorer"] == "v2" and c["stored_heuristic"] == score(TEXTS["json"])
    assert c["stored_lek_score"] == score(TEXTS["json"])["lek_score"] and c["chars"] == len(TEXTS["json"])
    assert lines[0]["scorer"] == "v2_distill"
    summary = lines[-1]
    assert summary["scorer"] == "v2_distill" and summary["stored_summary"] == {"type": "summary", "conditions": []}
    assert [c["name"] for c in summary["conditions"]] == ["baseline", "json"]
    assert summary["conditions"][1]["avg_lek"] == score(TEXTS["json"], "v2_distill")["lek_score"]
    assert summary["conditions"][1]["stored_avg_lek"] == score(TEXTS["json"])["lek_score"]


def test_rescoring_twice_keeps_the_first_stored_values(tmp_path):
    recs = [our_record("P1", TEXTS)]
    recs[0]["conditions"]["baseline"].pop("heuristic")  # an old record: no heuristic, no scorer
    del recs[0]["scorer"]
    once = rescore_records(recs, "v2_distill")
    assert once[0]["conditions"]["baseline"]["stored_scorer"] == "v1"
    twice = rescore_records(once, "v2")
    c = twice[0]["conditions"]["baseline"]
    assert c["stored_scorer"] == "v1" and c["stored_heuristic"] is None and c["scorer"] == "v2"
    assert c["heuristic"] == score(TEXTS["baseline"])
    assert recs[0]["conditions"]["baseline"].get("scorer") is None  # inputs untouched


def test_malformed_line_names_file_and_line_and_writes_nothing(tmp_path, capsys):
    good = write_lines(tmp_path / "good.jsonl", [our_record("P1", TEXTS)])
    bad = write_lines(tmp_path / "bad.jsonl", [our_record("P1", TEXTS), our_record("P2", TEXTS), '{"type": "probe", '])
    out_dir = tmp_path / "out"
    assert run_cli(str(good), str(bad), "-o", str(out_dir)) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and "line 3" in err and "nothing written" in err
    assert not out_dir.exists()
    with pytest.raises(DataError, match="line 3"):
        rescore_file(bad)


def test_missing_response_and_unknown_type_are_reported_with_fields(tmp_path):
    rec = our_record("P1", TEXTS)
    rec["conditions"]["json"].pop("response")
    path = write_lines(tmp_path / "x.jsonl", [rec, {"type": "config"}, {"id": "no conditions", "type": "probe"}])
    with pytest.raises(DataError) as e:
        read_ab_lines(path)
    msg = str(e.value)
    assert "line 1, field 'conditions.json.response'" in msg
    assert "line 2, field 'type'" in msg and "line 3, field 'conditions'" in msg


def test_output_paths_and_no_overwrite(tmp_path, capsys):
    src = write_lines(tmp_path / "ab-x.jsonl", [our_record("P1", TEXTS)])
    assert output_path(src, None, 1, "v2", tmp_path / "d") == tmp_path / "d" / "ab-x.v2.jsonl"
    assert output_path(src, tmp_path / "o.jsonl", 1, "v2", "unused") == tmp_path / "o.jsonl"
    assert output_path(src, tmp_path / "o.jsonl", 2, "v2", "unused") == tmp_path / "o.jsonl" / "ab-x.v2.jsonl"
    before = src.read_bytes()
    assert run_cli(str(src), "-o", str(src)) == 2
    assert "overwrite" in capsys.readouterr().err and src.read_bytes() == before
    assert run_cli(str(src), "--no-write") == 0
    assert "ab-x.jsonl" in capsys.readouterr().out


def test_cli_on_upstream_p20_file(upstream, tmp_path, capsys):
    src = upstream / "benchmarks" / "ab-base-gemma3-12b-mlxlm.jsonl"
    assert run_cli(str(src), "-o", str(tmp_path / "out")) == 0
    text = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in text.splitlines()[2:5]}
    assert rows["baseline"][1:] == ["20", "8.50", "v1", "19.73", "+11.23"]
    assert rows["json"][4] == "25.20" and rows["txt"][4] == "23.00"
    lines = read_jsonl(tmp_path / "out" / "ab-base-gemma3-12b-mlxlm.v2.jsonl")
    assert len(lines) == 21 and lines[-1]["conditions"][0]["stored_scorers"] == ["v1"]
