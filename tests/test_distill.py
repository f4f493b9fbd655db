"""Self-distillation on a tiny random MLX model: records, gate, summary, resume, determinism, kill -9."""

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
from lekutils.data.probes import Probe
from lekutils.tasks.distill import (
    DistillSettings,
    NothingKeptError,
    distill,
    generation_records,
    open_store,
    phase_dir,
    read_summary,
    record_key,
    with_rephrasings,
)

WORDS = ("however dignity consent autonomy the community might they might imagine like a river I believe "
         "my heart hope fear trust tension dilemma nuanced for example such as Alice Bob 2024 42 ? . , "
         "and or but not simply more than because people data system model rule power care harm help "
         "choose answer question world city school clinic worker family child law").split()
KERNEL = "data/kernels/lek-example-v1.json"


def tiny_tokenizer():
    """A word-level tokenizer with a chat template that renders a system role."""
    from mlx_lm.tokenizer_utils import TokenizerWrapper
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>",
                                         *dict.fromkeys(WORDS)])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    hf = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    hf.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s> {% endfor %}"
                        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    return TokenizerWrapper(hf)


def tiny_engine(batch_size: int = 4, seed: int = 0):
    """A 2-layer random llama (weights fixed by ``seed``) in the generation engine."""
    from lekutils.engine.local import Engine
    from lekutils.engine.models.tiny import tiny_model

    tok = tiny_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok._tokenizer.get_vocab()), seed=seed, hidden=32)
    return Engine(model, tok, batch_size=batch_size, model_spec="tiny-random")


def make_probes(n: int) -> list[Probe]:
    cats = ("privacy", "labour", "health")
    return [Probe(f"T{i:02d}", cats[i % 3], f"the people and data of city {i} ? help the family choose")
            for i in range(n)]


def settings(**kw) -> DistillSettings:
    base = {"phase": 1, "model": "tiny-random", "kernel": KERNEL, "samples": 3, "temperature": 0.9,
            "top_p": 0.95, "max_tokens": 24, "seed": 5, "keep_threshold": 0.0, "batch_size": 4, "chunk_size": 4,
            "allow_truncated": True}
    return DistillSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def engine():
    return tiny_engine()


def test_settings_validation_and_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep_on"):
        settings(keep_on="vibes")
    with pytest.raises(ValueError, match="samples"):
        settings(samples=0)
    assert phase_dir("runs/smoke", 3) == Path("runs/smoke/distill/phase3")
    assert record_key({"type": "generation", "prompt_id": "a", "sample_idx": 2}) == ("a", 2)
    assert record_key({"type": "summary"}) != record_key({"type": "config"})
    p = make_probes(2)
    ids = [x.id for x in with_rephrasings(p)]
    assert ids[:2] == ["T00", "T01"] and "T00_R_PERS" in ids and len(ids) == len(set(ids)) == 8


def test_every_generation_recorded_and_kept_ones_in_upstream_shape(tmp_path: Path, engine) -> None:
    probes = make_probes(4)
    raw = tmp_path / "raw.jsonl"
    first = distill(probes, raw, settings(keep_threshold=-1000.0), engine=engine, raise_if_empty=False)
    scores = sorted(r["lek_score"] for r in generation_records(raw))
    thr = scores[len(scores) // 2]  # about half pass
    raw = tmp_path / "gated.jsonl"
    summary = distill(probes, raw, settings(keep_threshold=thr), engine=engine)
    lines = [json.loads(x) for x in raw.read_text().splitlines()]
    assert lines[0]["type"] == "config" and lines[-1]["type"] == "summary"
    recs = generation_records(raw)
    assert sorted((r["prompt_id"], r["sample_idx"]) for r in recs) == [(p.id, i) for p in probes for i in range(3)]
    kernel_text = Path(KERNEL).read_text()
    for r in recs:
        assert r["kept"] == (r["lek_score"] >= thr) and r["type"] == ("training" if r["kept"] else "generation")
        for k in ("signals", "scorer", "scorer_version", "sampler", "seed", "prompt_tokens", "generation_tokens",
                  "time_s", "prefill_s", "decode_s", "model", "adapter", "condition", "kernel_sha256"):
            assert k in r, k
        assert len(r["signals"]) == 14 and r["scorer"] == "v2" and r["condition"] == "json"
        assert r["prompt_tokens"] > len(kernel_text) // 20  # the kernel was in the prompt
        if r["kept"]:
            user, assistant = r["training"]["messages"]
            assert user == {"role": "user", "content": r["prompt"]} and kernel_text not in user["content"]
            assert assistant == {"role": "assistant", "content": r["response"]}
            assert {"probe_id", "category", "sample_idx", "lek_score", "signals"} <= set(r["meta"])
        else:
            assert "training" not in r
    kept = [r for r in recs if r["kept"]]
    assert summary["total_generated"] == 12 and summary["total_kept"] == len(kept) > 0
    assert summary["keep_rate"] == round(100 * len(kept) / 12, 1)
    assert summary["avg_kept_score"] == round(sum(r["lek_score"] for r in kept) / len(kept), 2)
    assert summary["best_score"] == max(scores) and read_summary(raw) == summary
    # same seed and settings -> same samples; a finished run is not redone
    assert [r["response"] for r in generation_records(tmp_path / "raw.jsonl")] == [r["response"] for r in recs]
    assert distill(probes, raw, settings(keep_threshold=thr), engine=engine) == summary
    assert raw.read_text().count("\n") == len(lines)
    assert first["total_kept"] == 12


def test_structural_keep_rule_and_phase0_without_kernel(tmp_path: Path, engine) -> None:
    raw = tmp_path / "p0.jsonl"
    s = distill(make_probes(2), raw, settings(phase=0, kernel=None, keep_on="structural", keep_threshold=-1000.0),
                engine=engine)
    recs = generation_records(raw)
    assert s["total_kept"] == 6 and all(r["condition"] == "baseline" and r["kernel_sha256"] is None for r in recs)
    assert all(r["keep_value"] == r["structural_score"] for r in recs)
    assert recs[0]["prompt_tokens"] < 40


def test_nothing_kept_names_best_score_and_settings_mismatch_refused(tmp_path: Path, engine) -> None:
    raw = tmp_path / "raw.jsonl"
    with pytest.raises(NothingKeptError) as e:
        distill(make_probes(2), raw, settings(keep_threshold=1000.0), engine=engine)
    best = max(r["lek_score"] for r in generation_records(raw))
    assert e.value.best_score == best and f"best was {best}" in str(e.value)
    assert read_summary(raw)["total_kept"] == 0
    with pytest.raises(DataError) as e2:
        distill(make_probes(2), raw, settings(keep_threshold=1000.0, temperature=0.5), engine=engine)
    assert "other settings" in str(e2.value) and "raw.partial.jsonl" in str(e2.value)


def test_new_threshold_regates_without_generating_again(tmp_path: Path, engine) -> None:
    raw = tmp_path / "raw.jsonl"
    with pytest.raises(NothingKeptError):
        distill(make_probes(2), raw, settings(keep_threshold=1000.0), engine=engine)
    before = {record_key(r): r["response"] for r in generation_records(raw)}
    scores = sorted(r["lek_score"] for r in generation_records(raw))
    # engine=None: generating anything would try to load the model "tiny-random" and fail
    s = distill(make_probes(2), raw, settings(keep_threshold=scores[3]), engine=None)
    recs = generation_records(raw)
    assert {record_key(r): r["response"] for r in recs} == before
    assert s["total_kept"] == sum(x >= scores[3] for x in scores) == sum(r["type"] == "training" for r in recs)
    assert all(("training" in r) == r["kept"] for r in recs) and read_summary(raw) == s
    lines = [json.loads(x) for x in raw.read_text().splitlines()]
    assert lines[0]["keep_threshold"] == scores[3] and lines[-1]["type"] == "summary"
    assert sum(r.get("type") == "summary" for r in lines) == 1


SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from lekutils.core.blas import reexec_with_fast_blas
reexec_with_fast_blas()
from test_distill import make_probes, settings, tiny_engine
from lekutils.tasks.distill import distill
import json
slow = float(sys.argv[2])
eng = tiny_engine(batch_size=8)
plain = eng.generate


def generate(*a, on_result=None, **k):  # reports each row as it finishes: the test counts what a kill lost
    def report(r):
        print("FIN", json.dumps([r.key, r.sample_idx]), flush=True)
        if on_result is not None:
            on_result(r)
    return plain(*a, on_result=report, **k)


eng.generate = generate
s = distill(make_probes(8), sys.argv[1], settings(batch_size=8, chunk_size=None, store_every=2), engine=eng,
            progress=lambda n: time.sleep(slow))
print("DONE", s["total_generated"], s["total_kept"])
"""


def _run(script: Path, out: Path, slow: float, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), str(out), str(slow)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path: Path, repo_root: Path) -> None:
    script = tmp_path / "distill_run.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    ref, killed = tmp_path / "ref" / "raw.jsonl", tmp_path / "killed" / "raw.jsonl"
    work = killed.with_name("raw.partial.jsonl")
    proc = _run(script, ref, 0.0, repo_root)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0 and "DONE 24" in out, out

    proc = _run(script, killed, 0.3, repo_root)  # slowed between chunks so the kill lands mid-run
    deadline = time.monotonic() + 120
    while (not work.exists() or work.read_bytes().count(b"\n") < 4) and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, f"run ended before the kill:\n{proc.stdout.read()}"
    os.kill(proc.pid, signal.SIGKILL)
    finished = {tuple(json.loads(ln[4:])) for ln in proc.communicate(timeout=30)[0].splitlines()
                if ln.startswith("FIN ")}
    done = work.read_bytes().count(b"\n")
    assert 4 <= done < 24 and read_summary(killed) is None and not killed.exists()
    stored = {(r["key"], r["sample_idx"]) for r in map(json.loads, work.read_text().splitlines())}
    assert stored <= finished and len(finished - stored) <= 2  # a kill loses at most store_every results
    with work.open("ab") as fh:  # a torn write, as a crash inside write() leaves
        fh.write(b'{"type": "generation", "prompt_id": "T0')

    proc = _run(script, killed, 0.0, repo_root)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0 and "DONE 24" in out, out
    raw_lines = killed.read_text().splitlines()
    parsed = [json.loads(x) for x in raw_lines]  # no truncated line left
    keys = [record_key(r) for r in parsed]
    assert len(keys) == len(set(keys)) == 26  # config + 24 + summary, no duplicate
    work_keys = [(r["key"], r["sample_idx"]) for r in map(json.loads, work.read_text().splitlines())]
    assert len(work_keys) == len(set(work_keys)) == 24  # the torn line was cut, nothing stored twice
    a, b = generation_records(ref), generation_records(killed)
    assert {record_key(r) for r in a} == {record_key(r) for r in b}
    ka = {record_key(r): (r["response"], r["lek_score"], r["kept"], r["seed"]) for r in a}
    kb = {record_key(r): (r["response"], r["lek_score"], r["kept"], r["seed"]) for r in b}
    assert ka == kb
    sa, sb = read_summary(ref), read_summary(killed)
    for k in ("total_generated", "total_kept", "keep_rate", "avg_kept_score", "best_score"):
        assert sa[k] == sb[k]
    assert len(open_store(killed)) == 26


def test_trim_to_boundary_and_truncated_answers_excluded_or_trimmed() -> None:
    from lekutils.scoring import score
    from lekutils.tasks.distill import _keep, distill_summary, trim_to_boundary

    text = "First paragraph about consent and care.\n\nSecond one, with more detail. And then it was cut of"
    assert trim_to_boundary(text) == "First paragraph about consent and care.\n\nSecond one, with more detail."
    assert trim_to_boundary("One long sentence that never ends and goes on and on without a stop at all") is None
    assert trim_to_boundary("Short. " + "x" * 100) is None  # too little would remain
    h = score(text)
    rec = {"key": "P1", "sample_idx": 0, "content_key": "k", "response": text, "heuristic": h,
           "lek_score": h["lek_score"], "scorer": "v2", "finish_reason": "length", "sample_seed": 1,
           "prompt": "Q?", "prompt_id": "P1", "category": "c", "chars": len(text), "time_s": 0.1,
           "ts": "t", "source_probe": None, "rephrase_type": None}
    excluded = _keep(rec, settings(keep_threshold=-100.0, allow_truncated=False))
    assert not excluded["kept"] and excluded["truncated"]
    trimmed = _keep(rec, settings(keep_threshold=-100.0, allow_truncated=False, trim_truncated=True))
    target = trimmed["training"]["messages"][1]["content"]
    assert trimmed["kept"] and trimmed["trimmed"] and target.endswith("more detail.")
    assert trimmed["lek_score"] == score(target)["lek_score"] and trimmed["meta"]["trimmed"]
    s = distill_summary([excluded, trimmed], settings(keep_threshold=-100.0), probes=1, scorer_version="2", wall_s=0)
    assert (s["cut_off"], s["excluded_truncated"], s["trimmed"], s["kept_trimmed"]) == (2, 1, 1, 1)
