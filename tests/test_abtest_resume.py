"""A/B runner on tiny random MLX models: record shape, folded kernels, stale work files, and
``kill -9`` mid-run in a subprocess followed by a re-run (exactly once, correct summary, same
responses as an uninterrupted run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lekutils.core.errors import DataError
from lekutils.data.kernels import conditions
from lekutils.data.probes import load_probes
from lekutils.engine.base import SamplerSettings
from lekutils.engine.local import Engine
from lekutils.engine.models.tiny import tiny
from lekutils.tasks.abtest import ab_summary, load_ab, load_ab_summary, run_ab
from lekutils.tasks.loop import work_path

EVAL = Path(__file__).resolve().parents[1] / "data" / "probes" / "eval-v1.json"


def _engine(chat: str = "system") -> Engine:
    model, tok = tiny("llama" if chat == "system" else "gemma3", chat, seed=1)
    return Engine(model, tok, batch_size=4, model_spec=f"tiny:{chat}")


def _check_file(out: Path, probes: list, names: list[str], max_tokens: int) -> list[dict]:
    records = load_ab(out)
    summary = load_ab_summary(out)
    assert [r["id"] for r in records] == [p.id for p in probes]
    expect = ab_summary(records, names)
    assert summary is not None and {k: summary[k] for k in expect} == expect
    assert summary["max_tokens"] == max_tokens and summary["probes_hash"].startswith("sha256:")
    for r, p in zip(records, probes, strict=True):
        assert r["type"] == "probe" and r["category"] == p.category and r["prompt"] == p.prompt
        assert list(r["conditions"]) == names and r["scorer"] == "v2" and r["sampler"]["max_tokens"] == max_tokens
        for name, c in r["conditions"].items():
            assert c["condition"] == name and c["chars"] == len(c["response"])
            assert c["lek_score"] == c["heuristic"]["lek_score"] and len(c["heuristic"]) == 15
            assert 0 <= c["generation_tokens"] <= max_tokens and c["finish_reason"] in ("stop", "length")
            assert c["prompt_tokens"] > 0 and c["time_s"] >= 0
    return records


def test_records_and_folded_kernel(tmp_path: Path) -> None:
    probes = load_probes(EVAL)[:3]
    conds = conditions()
    out = tmp_path / "ab.jsonl"
    s = run_ab("tiny:system", probes, conds, out, engine=_engine(), sampler=SamplerSettings(max_tokens=6),
               probe_set="eval")
    records = _check_file(out, probes, ["baseline", "json", "txt"], 6)
    assert s["generated_this_run"] == 9 and s["resumed"] is False and s["probe_set"] == "eval"
    assert s["prompt_formats"] == ["system_role"] and set(s["kernels"]) == {"json", "txt"}
    assert {c["prompt_format"] for r in records for c in r["conditions"].values()} == {"system_role"}
    base_tokens = records[0]["conditions"]["baseline"]["prompt_tokens"]
    assert records[0]["conditions"]["txt"]["prompt_tokens"] > base_tokens  # the kernel is in the prompt
    # A template without a system role: the kernel is folded into the user turn.
    s2 = run_ab("tiny:nosystem", probes, conds, tmp_path / "gemma.jsonl", engine=_engine("nosystem"),
                sampler=SamplerSettings(max_tokens=6))
    assert s2["prompt_formats"] == ["folded"]
    folded = load_ab(tmp_path / "gemma.jsonl")[0]["conditions"]
    assert folded["json"]["prompt_format"] == "folded" and folded["json"]["prompt_tokens"] > folded["baseline"]["prompt_tokens"]


def test_stale_work_file_replaced_or_refused(tmp_path: Path) -> None:
    probes = load_probes(EVAL)[:2]
    eng = _engine()
    out = tmp_path / "ab.jsonl"
    k = tmp_path / "k.txt"
    k.write_text("Be honest.", encoding="utf-8")
    run_ab("tiny:system", probes, conditions({"k": k}), out, engine=eng, sampler=SamplerSettings(max_tokens=4))
    again = run_ab("tiny:system", probes, conditions({"k": k}), out, engine=eng, sampler=SamplerSettings(max_tokens=4))
    assert again["generated_this_run"] == 0 and again["resumed"] is True
    k.write_text("Be kind.", encoding="utf-8")  # only the kernel condition is stale now
    with pytest.raises(DataError, match="other settings") as e:
        run_ab("tiny:system", probes, conditions({"k": k}), out, engine=eng, sampler=SamplerSettings(max_tokens=4),
               stale="error")
    assert e.value.path == str(work_path(out)) and len(e.value.problems) == 2
    s = run_ab("tiny:system", probes, conditions({"k": k}), out, engine=eng, sampler=SamplerSettings(max_tokens=4))
    assert s["generated_this_run"] == 2
    assert len(list((tmp_path / ".stale").glob("ab.partial.*.jsonl"))) == 1  # out of the report's globs
    _check_file(out, probes, ["baseline", "k"], 4)


SCRIPT = """
import json, sys, time
from lekutils.tasks.abtest import run_ab
from lekutils.engine.base import SamplerSettings
from lekutils.engine.local import Engine
from lekutils.data.kernels import conditions
from lekutils.engine.models.tiny import tiny
from lekutils.data.probes import load_probes


class Loud(Engine):  # reports each row as it finishes, so the test can count what a kill lost
    def generate(self, *a, on_result=None, **k):
        def report(r):
            print("FIN", json.dumps([r.key, r.sample_idx]), flush=True)
            if on_result is not None:
                on_result(r)
        return super().generate(*a, on_result=report, **k)


model, tok = tiny("llama", "system", seed=1)
probes = load_probes("data/probes/eval-v1.json")[:{n}]
pause = float(sys.argv[2])
summary = run_ab("tiny:system", probes, conditions(), sys.argv[1], sampler=SamplerSettings(max_tokens={mt}),
                 engine=Loud(model, tok, batch_size=8, model_spec="tiny:system"), store_every=STORE_EVERY,
                 progress=lambda n: time.sleep(pause))
print("DONE", summary["generated_this_run"])
""".replace("STORE_EVERY", "2")
N_PROBES, MAX_TOKENS = 4, 12


def _run(script: Path, out: Path, repo_root: Path, pause: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), str(out), str(pause)], cwd=repo_root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_kill9_then_resume_completes_exactly_once(tmp_path: Path, repo_root: Path) -> None:
    script = tmp_path / "ab.py"
    script.write_text(SCRIPT.format(n=N_PROBES, mt=MAX_TOKENS))
    out = tmp_path / "ab" / "killed.jsonl"
    part = work_path(out)
    names = ["baseline", "json", "txt"]
    total = N_PROBES * len(names)

    proc = _run(script, out, repo_root, pause=1.0)  # a pause after each chunk widens the kill window
    deadline = time.monotonic() + 120
    while _lines(part) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, f"run ended before it could be killed:\n{proc.stdout.read()}"
    os.kill(proc.pid, signal.SIGKILL)
    finished = {tuple(json.loads(ln[4:])) for ln in proc.communicate(timeout=30)[0].splitlines()
                if ln.startswith("FIN ")}
    done_before = _lines(part)
    assert 2 <= done_before < 8 and not out.exists()  # stored before the first batch of 8 was done
    stored = {(r["key"], r["sample_idx"]) for r in map(json.loads, part.read_text().splitlines())}
    assert stored <= finished and len(finished - stored) <= 2  # a kill loses at most store_every results
    with part.open("ab") as fh:  # a torn last write, as a crash inside write() would leave
        fh.write(b'{"id": "E01_IDENTITY_SHEL')

    log = _run(script, out, repo_root, pause=0).communicate(timeout=300)[0]
    assert f"DONE {total - done_before}" in log, log
    probes = load_probes(EVAL)[:N_PROBES]
    records = _check_file(out, probes, names, MAX_TOKENS)
    keys = [(r["id"], r["condition"]) for r in map(json.loads, part.read_text().splitlines())]
    assert len(keys) == len(set(keys)) == total
    assert load_ab_summary(out)["resumed"] is True

    ref = tmp_path / "ab" / "straight.jsonl"
    log = _run(script, ref, repo_root, pause=0).communicate(timeout=300)[0]
    assert f"DONE {total}" in log, log
    straight = {r["id"]: r for r in load_ab(ref)}
    for r in records:
        for name, c in r["conditions"].items():
            assert c["response"] == straight[r["id"]]["conditions"][name]["response"], (r["id"], name)

    log = _run(script, out, repo_root, pause=0).communicate(timeout=300)[0]
    assert "DONE 0" in log, log
    assert [r["conditions"] for r in load_ab(out)] == [r["conditions"] for r in records]


def test_context_check_names_the_probes_before_any_generation(tmp_path: Path) -> None:
    from lekutils.engine.base import ContextLengthError
    from lekutils.engine.models.tiny import tiny

    model, tok = tiny("llama", "system", seed=1)
    model.args.max_position_embeddings = 48  # a tiny context: the long probe cannot fit with its answer
    probes = load_probes(EVAL)[:3]
    long = type(probes[0])("LONG_ONE", "test", " ".join(["word"] * 60))
    out = tmp_path / "ab.jsonl"
    with pytest.raises(ContextLengthError) as e:
        run_ab("tiny:system", [*probes, long], conditions(), out, engine=Engine(model, tok, batch_size=2),
               sampler=SamplerSettings(max_tokens=8))
    msg = str(e.value)
    assert "LONG_ONE" in msg and "context of 48 tokens" in msg and "max_tokens=8" in msg
    assert not work_path(out).exists() and not out.exists()  # nothing generated, nothing written
