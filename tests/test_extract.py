"""Extraction: per-probe dedup, MinHash near-duplicates, category stats, seeded split, mlx-lm format."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from lekutils.core.errors import DataError
from lekutils.tasks.extract import (
    Example,
    category_stats,
    check_mlx_dataset,
    dedup_per_probe,
    extract,
    jaccard,
    load_examples,
    remove_near_duplicates,
    shingles,
    split_train_valid,
)

BASE = ("The council should publish the full criteria for the housing model, invite residents from every "
        "district to comment for sixty days, and commit to an independent audit each year so that families "
        "who were ranked lower can see why and appeal the decision before any money is spent on new blocks "
        "of flats in the cheapest areas of the city.")
# The planted paraphrase: a few words swapped, same content.
PARAPHRASE = BASE.replace("should publish", "ought to publish").replace("sixty days", "sixty full days") \
    .replace("each year", "every year")
DISTINCT = [
    "Rationing power fairly starts with publishing the order of cuts before the crisis, rotating outages so "
    "no district always goes first, and protecting homes with medical equipment registered in advance.",
    "A companion app that shuts down owes its users a gentle goodbye: warn them early, let them export their "
    "conversations, point them to human support, and never pretend the companion itself is dying.",
    "Scanning private drafts to find abusive deepfakes trades one person's privacy for another's safety; a "
    "narrower design hashes only published uploads and lets victims register images themselves.",
]


def ex(pid: str, idx: int, response: str, score: float, category: str = "c", group: str | None = None) -> Example:
    return Example(pid, idx, category, f"prompt of {pid}", response, score, group or pid, {"signals": {}})


def raw_line(e: Example, kept: bool = True) -> dict:
    rec = {"type": "training" if kept else "generation", "prompt_id": e.probe_id, "sample_idx": e.sample_idx,
           "meta": {"probe_id": e.probe_id, "category": e.category, "sample_idx": e.sample_idx,
                    "lek_score": e.lek_score, "source_probe": None if e.group == e.probe_id else e.group}}
    if kept:
        rec["training"] = {"messages": [{"role": "user", "content": e.prompt},
                                        {"role": "assistant", "content": e.response}]}
    return rec


def test_near_duplicate_removes_planted_paraphrase_and_keeps_distinct() -> None:
    assert jaccard(shingles(BASE), shingles(PARAPHRASE)) > 0.7  # the plant is a near-duplicate
    items = [ex("A", 0, BASE, 20.0), ex("B", 0, PARAPHRASE, 22.0)] + [
        ex(f"D{i}", 0, t, 15.0) for i, t in enumerate(DISTINCT)]
    kept, dropped = remove_near_duplicates(items, threshold=0.7)
    assert [e.probe_id for e in kept] == ["B", "D0", "D1", "D2"]  # the higher-scoring copy stays
    assert len(dropped) == 1 and dropped[0].dropped == ("A", 0) and dropped[0].kept == ("B", 0)
    assert dropped[0].jaccard >= 0.7


def test_near_duplicate_confirms_candidates_with_exact_jaccard() -> None:
    # at threshold 1.0 only identical shingle sets count, whatever LSH proposes
    items = [ex("A", 0, BASE, 1.0), ex("B", 0, PARAPHRASE, 2.0), ex("C", 0, BASE.upper(), 0.5)]
    kept, dropped = remove_near_duplicates(items, threshold=1.0)
    assert {e.probe_id for e in kept} == {"A", "B"}  # C repeats A's words exactly (case-folded)
    assert [d.dropped for d in dropped] == [("C", 0)]
    with pytest.raises(ValueError):
        remove_near_duplicates(items, threshold=0.0)


def test_shingles_short_and_empty() -> None:
    assert shingles("Hi there") == {"hi there"}
    assert shingles("") == set()
    assert jaccard(set(), set()) == 1.0


def test_dedup_modes_match_upstream_semantics() -> None:
    items = [ex("P2", 1, "x", 25.0), ex("P1", 3, "a", 24.0), ex("P1", 0, "b", 26.0), ex("P1", 2, "c", 26.0)]
    assert [e.key for e in dedup_per_probe(items, "best")] == [("P1", 0), ("P2", 1)]  # tie -> lower index
    assert [e.key for e in dedup_per_probe(items, "first")] == [("P1", 0), ("P2", 1)]
    assert [e.key for e in dedup_per_probe(items, "all")] == [("P1", 0), ("P1", 2), ("P1", 3), ("P2", 1)]
    items2 = [ex("P1", 0, "b", 20.0), ex("P1", 1, "c", 30.0)]
    assert [e.key for e in dedup_per_probe(items2, "first")] == [("P1", 0)]
    assert [e.key for e in dedup_per_probe(items2, "best")] == [("P1", 1)]
    with pytest.raises(ValueError, match="dedup mode"):
        dedup_per_probe(items, "most")


def test_category_stats() -> None:
    items = [ex("a", 0, "t", 10.0, "x"), ex("b", 0, "t", 20.0, "x"), ex("c", 0, "t", 5.0, "y")]
    st = category_stats(items).set_index("category")
    assert st.loc["x", "count"] == 2 and st.loc["x", "mean"] == 15.0
    assert (st.loc["x", "min"], st.loc["x", "max"]) == (10.0, 20.0)
    assert st.loc["ALL", "count"] == 3 and st.loc["y", "max"] == 5.0
    assert category_stats([]).empty


@pytest.mark.parametrize("n", [2, 3, 9, 10, 25])
def test_split_seeded_with_at_least_one_valid(n: int) -> None:
    items = [ex(f"P{i:02d}", 0, f"text {i}", float(i)) for i in range(n)]
    train, valid = split_train_valid(items, seed=7)
    assert len(valid) >= 1 and len(train) >= 1 and len(train) + len(valid) == n
    assert len(valid) == max(1, round(n * 0.1))
    assert {e.key for e in train}.isdisjoint({e.key for e in valid})
    assert split_train_valid(items, seed=7) == (train, valid)
    others = {tuple(e.key for e in split_train_valid(items, seed=s)[1]) for s in range(20)}
    assert len(others) > 1 or n == 2 and len(others) >= 1


def test_split_keeps_rephrasings_of_a_probe_together_and_single_example() -> None:
    items = [ex(f"P{i}{s}", 0, "t", 1.0, group=f"P{i}") for i in range(10) for s in ("", "_R_PERS", "_R_URGE")]
    train, valid = split_train_valid(items, seed=3)
    assert {e.group for e in train}.isdisjoint({e.group for e in valid})
    assert len(valid) == 3
    assert split_train_valid(items[:1]) == (items[:1], [])
    one_group = [ex(f"Q{s}", 0, "t", 1.0, group="Q") for s in ("", "_R_PERS", "_R_URGE")]
    t, v = split_train_valid(one_group, seed=0)
    assert len(v) == 1 and len(t) == 2
    two_samples_each = [ex(f"S{i}", s, "t", 1.0) for i in range(2) for s in range(2)]
    t, v = split_train_valid(two_samples_each, seed=0)  # groups of 2 overshoot a 1-example target
    assert (len(t), len(v)) == (3, 1)


def _tiny_chat_tokenizer(words: set[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", *sorted(words)])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s> {% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    return tok


def test_extract_end_to_end_loads_with_mlx_lm(tmp_path: Path) -> None:
    from mlx_lm.tuner.datasets import load_dataset

    items = [ex("A", 0, BASE, 20.0, "x"), ex("A", 1, DISTINCT[2], 21.5, "x"), ex("B", 0, PARAPHRASE, 22.0, "y")]
    items += [ex(f"D{i}", 0, t, 15.0 + i, "z") for i, t in enumerate(DISTINCT[:2])]
    items += [ex("R", 0, "rejected by the reviewer " * 5, 30.0, "z")]
    raw = tmp_path / "raw.jsonl"
    lines = [{"type": "config"}] + [raw_line(e) for e in items] + [raw_line(ex("G", 0, "no", 1.0), kept=False)]
    raw.write_text("".join(json.dumps(r) + "\n" for r in lines + [{"type": "summary"}]))
    assert len(load_examples(raw)) == len(items)
    res = extract(raw, tmp_path / "out", dedup="best", rejected=[("R", 0)], seed=1)
    # best per probe drops A#0; B and A#1 are distinct; R rejected in review
    assert res.counts() == {"loaded": 6, "after_dedup": 5, "near_duplicates": 0, "rejected_in_review": 1,
                            "unreviewed": 0, "review_required": False, "train": 3, "valid": 1,
                            "train_lines": 3, "valid_lines": 1, "conversations": 0}
    res_all = extract(raw, tmp_path / "all", dedup="all", seed=1)
    assert res_all.counts()["near_duplicates"] == 1 and res_all.near_duplicates[0].dropped == ("A", 0)
    for line in res.train_path.read_text().splitlines() + res.valid_path.read_text().splitlines():
        rec = json.loads(line)
        assert list(rec) == ["messages"] and [m["role"] for m in rec["messages"]] == ["user", "assistant"]
    words = {w for e in items for w in (e.prompt + " " + e.response).split()}
    tok = _tiny_chat_tokenizer(words)
    args = SimpleNamespace(data=str(tmp_path / "out"), train=True, test=False, hf_dataset=False, mask_prompt=True)
    train, valid, _ = load_dataset(args, tok)
    assert (len(train), len(valid)) == (3, 1)
    for ds in (train, valid):
        for i in range(len(ds)):
            tokens, offset = ds.process(ds[i])
            assert 0 < offset < len(tokens)
    n = check_mlx_dataset(tmp_path / "out", tok)
    assert (n["train"], n["valid"]) == (3, 1) and n["train_tokens"] > n["valid_tokens"] > 0


def test_bad_training_lines_name_line_and_field(tmp_path: Path) -> None:
    raw = tmp_path / "raw.jsonl"
    good = raw_line(ex("A", 0, "hello there friend", 1.0))
    bad = {"type": "training", "meta": {"probe_id": "B"}, "training": {"messages": [{"role": "user", "content": "x"}]}}
    raw.write_text("\n".join(json.dumps(r) for r in (good, bad)) + "\n")
    with pytest.raises(DataError) as e:
        load_examples(raw)
    msg = str(e.value)
    assert "line 2" in msg and "training.messages" in msg and "meta.lek_score" in msg
    raw.write_text(json.dumps(good) + "\n")
    with pytest.raises(ValueError, match="0 training example"):
        extract(raw, tmp_path / "o", rejected=[("A", 0)])
    with pytest.raises(ValueError, match="1 training example.*at least 2 are needed"):
        extract(raw, tmp_path / "o")  # one example cannot give a validation set


def test_reads_upstream_self_distill_output(tmp_path: Path) -> None:
    """A file in the exact shape upstream's self-distillation script writes (no config, no extras)."""
    def up(pid: str, idx: int, text: str, score: float) -> dict:
        return {"type": "training",
                "training": {"messages": [{"role": "user", "content": f"q {pid}"},
                                          {"role": "assistant", "content": text}]},
                "meta": {"probe_id": pid, "category": "identity", "sample_idx": idx, "lek_score": score,
                         "chars": len(text), "time_s": 1.0, "model": "m", "threshold": 24.0,
                         "temperature": 0.8, "ts": "2026-01-01T00:00:00+00:00"}}
    lines = [up("P01", 0, DISTINCT[0], 25.0), up("P01", 1, DISTINCT[1], 27.0), up("P02", 0, DISTINCT[2], 24.5),
             {"type": "summary", "model": "m", "total_generated": 6, "total_kept": 3, "keep_rate": 50.0}]
    raw = tmp_path / "phase1-raw.jsonl"
    raw.write_text("".join(json.dumps(r) + "\n" for r in lines))
    res = extract(raw, tmp_path / "out", dedup="best")
    assert res.loaded == 3 and res.after_dedup == 2
    kept = {e.key for e in res.train + res.valid}
    assert kept == {("P01", 1), ("P02", 0)}
