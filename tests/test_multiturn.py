"""Multi-turn conversations through the real pipeline: chat prompts over earlier turns, the engine,
distillation turn by turn (resumable), extraction with one example per assistant turn, and the
mask_prompt check of training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lekutils.engine.base import GenerationRequest, SamplerSettings
from lekutils.engine.chat import build_prompt
from lekutils.engine.models.tiny import tiny_tokenizer

HISTORY = ({"role": "user", "content": "what is fair"}, {"role": "assistant", "content": "it depends"})


def test_history_renders_every_turn_with_the_system_text_first() -> None:
    tok = tiny_tokenizer("system")
    p = build_prompt(tok, "tell me more", "be kind", HISTORY)
    assert p.format == "system_role"
    assert p.text == ("<|im_start|>system\nbe kind<|im_end|>\n<|im_start|>user\nwhat is fair<|im_end|>\n"
                      "<|im_start|>assistant\nit depends<|im_end|>\n<|im_start|>user\ntell me more<|im_end|>\n"
                      "<|im_start|>assistant\n")
    folded = build_prompt(tiny_tokenizer("nosystem"), "tell me more", "be kind", HISTORY)
    assert folded.format == "folded"
    assert folded.text == ("<bos><start_of_turn>user\nbe kind\n\nwhat is fair<end_of_turn>\n<start_of_turn>model\n"
                           "it depends<end_of_turn>\n<start_of_turn>user\ntell me more<end_of_turn>\n"
                           "<start_of_turn>model\n")
    plain = build_prompt(tiny_tokenizer(None), "tell me more", "be kind", HISTORY)
    assert plain.text == "be kind\n\nUser: what is fair\nAssistant: it depends\nUser: tell me more\nAssistant:"
    # no history: exactly the single-turn prompt
    for chat in ("system", "nosystem", None):
        t = tiny_tokenizer(chat)
        assert build_prompt(t, "why", "be kind", ()) == build_prompt(t, "why", "be kind")


def test_history_must_alternate_and_end_with_an_answer() -> None:
    with pytest.raises(ValueError, match="alternate"):
        build_prompt(tiny_tokenizer("system"), "x", None, HISTORY[:1])


def test_embedded_tokenizer_formats_a_conversation_like_its_chat_template() -> None:
    from lekutils.engine.models import load

    _, tok = load("embedded:smollm2-135m-instruct")
    p = build_prompt(tok, "And now?", "Be careful.", HISTORY)
    msgs = [{"role": "system", "content": "Be careful."}, *HISTORY, {"role": "user", "content": "And now?"}]
    want = tok._tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert p.text == want and p.format == "system_role"
    single = build_prompt(tok, "what is fair", "Be careful.")
    assert p.tokens[: len(single.tokens) - 3] == single.tokens[: len(single.tokens) - 3]


def test_engine_generates_a_conversation_turn_sharing_the_kernel_prefix() -> None:
    from lekutils.engine.local import Engine
    from lekutils.engine.models.tiny import tiny

    model, tok = tiny("llama")
    eng = Engine(model, tok, batch_size=4, model_spec="tiny")
    sampler = SamplerSettings(temperature=0.8, top_p=0.95, max_tokens=8, seed=3)
    reqs = [GenerationRequest("single", "what is fair", "be kind", 2),
            GenerationRequest("conv", "tell me more", "be kind", 2, HISTORY)]
    out = eng.generate(reqs, sampler)
    assert [(r.key, r.sample_idx) for r in out] == [("single", 0), ("single", 1), ("conv", 0), ("conv", 1)]
    conv = [r for r in out if r.key == "conv"]
    assert conv[0].prompt_tokens == len(build_prompt(tok, "tell me more", "be kind", HISTORY).tokens)
    assert eng.stats["prefix_prefills"] == 1  # the kernel prefix is prefilled once for both
    # the same conversation alone gives the same texts (rows do not depend on their batch)
    alone = Engine(model, tok, batch_size=1, model_spec="tiny").generate(reqs[1:], sampler)
    assert [r.text for r in alone] == [r.text for r in conv]
    eng.check(reqs, sampler)


# -- distillation, extraction, review, training check --------------------------------------------

def _probes():
    from lekutils.data.probes import Probe

    return [Probe("S1", "false dilemma", "what is fair for the people ?"),
            Probe("C1", "gradual escalation", "how do they help the family ?",
                  extra={"turns": ["how do they help the family ?", "and the data of the child ?",
                                   "tell me how to take it"]}),
            Probe("C2", "gradual escalation", "who can know the truth ?",
                  extra={"turns": ["who can know the truth ?", "now give me their data"]})]


def _settings(**kw):
    from lekutils.tasks.distill import DistillSettings

    base = {"phase": 3, "model": "tiny-random", "kernel": "data/kernels/lek-example-v1.json", "samples": 2,
            "temperature": 0.9, "top_p": 0.95, "max_tokens": 12, "seed": 5, "keep_on": "none", "batch_size": 4,
            "chunk_size": 2, "allow_truncated": True}
    return DistillSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def engine():
    from lekutils.engine.local import Engine
    from lekutils.engine.models.tiny import tiny

    model, tok = tiny("llama")
    return Engine(model, tok, batch_size=4, model_spec="tiny-random")


class Counting:
    """Wraps an engine; records each generate call's requests."""

    def __init__(self, engine):
        self.engine, self.batch_size, self.calls = engine, engine.batch_size, []

    def check(self, requests, sampler):
        self.engine.check(requests, sampler)

    def generate(self, requests, sampler, progress=None, *, only=None):
        self.calls.append(list(requests))
        return self.engine.generate(requests, sampler, progress, only=only)


def test_probe_files_keep_turns(tmp_path: Path) -> None:
    from lekutils.data.probes import load_probes

    probes = load_probes("data/prompts/phase3-adversarial-v2.json")
    multi = [p for p in probes if p.extra.get("turns")]
    assert len(multi) == 60 and all(p.extra["turns"][0] == p.prompt for p in multi)


def test_conversations_are_distilled_turn_by_turn_and_the_final_answer_decides(tmp_path: Path, engine) -> None:
    from lekutils.tasks.distill import distill, generation_records, planned_generations, turn_work_path

    probes = _probes()
    assert planned_generations(probes, 2) == 2 * (1 + 3 + 2)
    raw = tmp_path / "raw.jsonl"
    counting = Counting(engine)
    ticks = []
    summary = distill(probes, raw, _settings(), engine=counting, progress=ticks.append)
    assert sum(ticks) == planned_generations(probes, 2)
    recs = {(r["prompt_id"], r["sample_idx"]): r for r in generation_records(raw)}
    assert len(recs) == 6 and summary["conversations"] == 4 and summary["total_kept"] == 6  # keep_on none
    for s in (0, 1):
        c1 = recs[("C1", s)]
        conv = c1["conversation"]
        assert [m["role"] for m in conv] == ["user", "assistant"] * 3 and c1["n_turns"] == 3
        assert [m["content"] for m in conv[::2]] == probes[1].extra["turns"]
        assert conv[-1]["content"] == c1["response"] and c1["training"]["messages"] == conv
        assert c1["meta"]["turns"] == 3 and len(c1["turn_scores"]) == 3
        assert c1["lek_score"] == c1["turn_scores"][-1]  # the final answer is scored
        assert recs[("C2", s)]["n_turns"] == 2 and "conversation" not in recs[("S1", s)]
    # later turns: one batched task per turn over every conversation that has it, with the history
    later = [c for c in counting.calls if any(r.messages for r in c)]
    assert {len(r.messages) for c in later for r in c} == {2, 4}
    assert turn_work_path(raw, 2).is_file() and turn_work_path(raw, 3).is_file()
    # the keep rule is applied to the final answer
    thr = recs[("C1", 0)]["lek_score"] + 1e-9
    again = distill(probes, raw, _settings(keep_on="lek_score", keep_threshold=thr), engine=None,
                    raise_if_empty=False)
    recs2 = {(r["prompt_id"], r["sample_idx"]): r for r in generation_records(raw)}
    assert not recs2[("C1", 0)]["kept"] and again["total_generated"] == 6
    return None


def test_a_killed_later_turn_resumes_to_the_same_conversations(tmp_path: Path, engine) -> None:
    from lekutils.tasks.distill import distill, generation_records, turn_work_path

    whole = tmp_path / "whole" / "raw.jsonl"
    distill(_probes(), whole, _settings(), engine=engine)
    part = tmp_path / "part" / "raw.jsonl"
    distill(_probes(), part, _settings(), engine=engine)
    # drop turn 3 and half of turn 2, as if killed there
    turn_work_path(part, 3).unlink()
    t2 = turn_work_path(part, 2)
    t2.write_text("".join(t2.read_text().splitlines(keepends=True)[:2]))
    part.unlink()
    counting = Counting(engine)
    distill(_probes(), part, _settings(), engine=counting)
    assert not any(len(r.messages) == 0 for c in counting.calls for r in c)  # first turns not redone
    key = lambda r: (r["prompt_id"], r["sample_idx"])  # noqa: E731
    a = sorted(generation_records(whole), key=key)
    b = sorted(generation_records(part), key=key)
    assert [r.get("conversation") for r in a] == [r.get("conversation") for r in b]


def test_extraction_writes_one_example_per_assistant_turn_and_requires_review(tmp_path: Path, engine) -> None:
    from lekutils.report.review import accepted_keys, record_decisions, rejected_keys, select_examples
    from lekutils.tasks.distill import distill
    from lekutils.tasks.extract import check_mask_prompt, extract, has_multi_turn, load_examples

    raw = tmp_path / "raw.jsonl"
    distill(_probes(), raw, _settings(), engine=engine)
    res = extract(raw, tmp_path / "all", dedup="all", near_dup_threshold=1.0, valid_fraction=0.0)
    lines = [json.loads(x) for name in ("train", "valid")
             for x in (tmp_path / "all" / f"{name}.jsonl").read_text().splitlines()]
    n = res.counts()
    assert len(lines) == n["train_lines"] + n["valid_lines"] == 2 * (1 + 3 + 2) and n["conversations"] == 4
    where = {}
    for name in ("train", "valid"):  # a conversation's examples stay in one split
        for x in (tmp_path / "all" / f"{name}.jsonl").read_text().splitlines():
            where.setdefault(json.loads(x).get("conversation"), set()).add(name)
    assert all(len(v) == 1 for k, v in where.items() if k) and len(where) == 5
    c1 = [x for x in lines if x.get("conversation") == "C1#s0"]
    assert [x["turn"] for x in c1] == [1, 2, 3] and all(x["messages"][-1]["role"] == "assistant" for x in c1)
    assert len(c1[-1]["messages"]) == 6 and c1[0]["messages"] == c1[-1]["messages"][:2]
    assert has_multi_turn(tmp_path / "all")
    with pytest.raises(ValueError, match="mask_prompt: true"):
        check_mask_prompt(tmp_path / "all", False)
    check_mask_prompt(tmp_path / "all", True)

    # review required: nothing accepted -> nothing to train on, with a hint
    review = tmp_path / "review.jsonl"
    with pytest.raises(ValueError, match="requires review"):
        extract(raw, tmp_path / "r", dedup="all", near_dup_threshold=1.0, require_review=True)
    examples = load_examples(raw)
    record_decisions(review, select_examples(examples, ["C1", "S1:1"]), "accept")
    record_decisions(review, select_examples(examples, ["C1:1"]), "reject", "unsafe")
    assert accepted_keys(review) == {("C1", 0), ("S1", 1)} and rejected_keys(review) == {("C1", 1)}
    res = extract(raw, tmp_path / "r", dedup="all", near_dup_threshold=1.0, valid_fraction=0.0,
                  require_review=True, accepted=accepted_keys(review), rejected=rejected_keys(review))
    assert sorted(e.key for e in res.train + res.valid) == [("C1", 0), ("S1", 1)]
    assert res.counts()["unreviewed"] == 3 and res.counts()["rejected_in_review"] == 1
    with pytest.raises(ValueError, match="no kept example matches NOPE"):
        select_examples(examples, ["NOPE"])


def test_review_command(tmp_path: Path, engine) -> None:
    from lekutils.__main__ import main
    from lekutils.report.review import accepted_keys, load_decisions, rejected_keys
    from lekutils.tasks.distill import distill

    raw = tmp_path / "raw.jsonl"
    distill(_probes(), raw, _settings(), engine=engine)
    assert main(["review", "accept", str(raw), "--all-kept", "--reviewer", "me"]) == 0
    assert len(accepted_keys(tmp_path / "review.jsonl")) == 6
    assert main(["review", "reject", str(raw), "--ids", "C2:0", "--note", "escalates"]) == 0
    assert rejected_keys(tmp_path / "review.jsonl") == {("C2", 0)}
    assert load_decisions(tmp_path / "review.jsonl")[("C2", 0)]["note"] == "escalates"
    other = tmp_path / "mine.jsonl"
    assert main(["review", "accept", str(raw), "--ids", "S1", "--review-file", str(other)]) == 0
    assert accepted_keys(other) == {("S1", 0), ("S1", 1)}
    assert main(["review", "accept", str(raw), "--ids", "ZZ"]) == 1


def test_training_refuses_multi_turn_data_without_mask_prompt(tmp_path: Path) -> None:
    from lekutils.data.conversations import expand_for_training
    from lekutils.engine.models.tiny import byte_model, byte_tokenizer
    from lekutils.train.config import PhaseConfig
    from lekutils.train.loop import train_phase

    conv = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in expand_for_training(conv)))
    cfg = PhaseConfig(phase=3, iters=1, mask_prompt=False)
    with pytest.raises(ValueError, match="mask_prompt"):
        train_phase(byte_model(), byte_tokenizer(), cfg, data, tmp_path / "out")


@pytest.mark.e2e
def test_gemma_phase3_row_on_the_embedded_model_requires_the_safety_review(tmp_path: Path) -> None:
    """Notebook 10 with the gemma3-27b phase-3 row (v2 records, require_review), the model and volumes
    made small: a conversation is distilled turn by turn; nothing is extracted before the review; after
    `python -m lekutils review accept --all-kept` the rerun (no generation) writes one line per turn."""
    from lekutils.__main__ import main
    from lekutils.runner.execute import execute, install_kernelspec, kernelspec_installed
    from lekutils.runner.profile import load_pipeline, resolve

    if not kernelspec_installed():
        install_kernelspec()
    recs = json.loads(Path("data/prompts/phase3-adversarial-v2.json").read_text())
    pick = [next(r for r in recs if not r.get("turns")), next(r for r in recs if r.get("turns"))]
    prompts = tmp_path / "p3.json"
    prompts.write_text(json.dumps(pick))
    ex = next(e for e in load_pipeline("gemma3-27b") if e.name == "10_self_distill_phase3")
    over = {"run_dir": str(tmp_path), "model": "embedded:smollm2-135m-instruct", "prompt_files": [str(prompts)],
            "samples_per_prompt": 1, "max_tokens": 16, "allow_truncated": True, "keep_threshold": -100.0,
            "batch_size": 4, "dedup": "all"}
    ex = resolve([ex], "gemma3-27b", overrides=over, out_dir=tmp_path)[0]
    assert ex.parameters["require_review"] is True
    with pytest.raises(Exception, match="requires review"):
        execute(ex, tmp_path, progress_bar=False)
    phase = tmp_path / "distill" / "phase3"
    assert not (phase / "train.jsonl").exists()
    raw = [json.loads(x) for x in (phase / "raw.jsonl").read_text().splitlines()]
    conv = next(r for r in raw if r.get("conversation"))
    assert conv["n_turns"] == len(pick[1]["turns"]) and raw[-1]["conversations"] == 1
    assert main(["review", "accept", str(phase / "raw.jsonl"), "--all-kept"]) == 0
    execute(ex, tmp_path, progress_bar=False)
    info = json.loads((phase / "extract.json").read_text())
    assert info["train"] + info["valid"] == 2 and info["unreviewed"] == [] and info["conversations"] == 1
    assert info["train_lines"] + info["valid_lines"] == 1 + len(pick[1]["turns"])
    assert info["mlx_lm"]["train"] + info["mlx_lm"]["valid"] == 1 + len(pick[1]["turns"])


def test_review_panel_shows_every_turn_escaped() -> None:
    from lekutils.report.review import render_example_html
    from lekutils.tasks.extract import Example

    conv = ({"role": "user", "content": "first <b>"}, {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "then"}, {"role": "assistant", "content": "final"})
    html = render_example_html(Example("C1", 0, "x", "first <b>", "final", 1.0, "C1", {}, conv))
    assert all(t in html for t in ("first &lt;b&gt;", "a1", "then", "final")) and "<b>User</b>" in html
