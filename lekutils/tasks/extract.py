"""Turn a distillation record file into mlx-lm training data.

The steps, in order: read the kept (``type: "training"``) lines of a ``raw.jsonl`` (ours or
upstream's self-distillation output), dedup per probe (``best`` / ``all`` / ``first``, as upstream's
extract step), drop near-duplicate responses across the whole set (MinHash LSH from ``datasketch``
proposes candidates, exact Jaccard on word shingles confirms them), drop examples a reviewer
rejected, and split the rest 90/10 into ``train.jsonl`` / ``valid.jsonl`` in mlx-lm's chat format
(``{"messages": [...]}``), which ``mlx_lm.tuner.datasets.load_dataset`` reads directly.
"""

from __future__ import annotations

import logging
import os
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lekutils.core.errors import DataError, Problem
from lekutils.core.jsonl import atomic_write_jsonl, iter_jsonl
from lekutils.data.text import jaccard, shingles

log = logging.getLogger(__name__)

DEDUP_MODES = ("best", "all", "first")


@dataclass(frozen=True)
class Example:
    """One kept training example: the user prompt (without kernel) and the answer."""

    probe_id: str
    sample_idx: int
    category: str
    prompt: str
    response: str
    lek_score: float
    group: str  # the probe a rephrasing came from (split keeps a group on one side)
    meta: dict = field(default_factory=dict, compare=False, hash=False)
    #: the whole conversation (user/assistant messages) of a multi-turn example; () for one turn
    conversation: tuple = field(default=(), compare=False, hash=False)

    @property
    def key(self) -> tuple[str, int]:
        return (self.probe_id, self.sample_idx)

    @property
    def source(self) -> str:
        """``"self"`` (self-distilled; upstream's records too) or the reference model's spec."""
        return str(self.meta.get("source") or "self")

    def chat(self) -> dict[str, list[dict[str, str]]]:
        """The mlx-lm chat-format line for this example (a conversation: the whole conversation)."""
        if self.conversation:
            return {"messages": [dict(m) for m in self.conversation]}
        return {"messages": [{"role": "user", "content": self.prompt},
                             {"role": "assistant", "content": self.response}]}

    def lines(self) -> list[dict[str, Any]]:
        """The training lines: :meth:`chat`, or for a conversation one line per assistant turn
        (:func:`lekutils.data.conversations.expand_for_training`; train with ``mask_prompt``)."""
        if not self.conversation:
            return [self.chat()]
        from lekutils.data.conversations import expand_for_training

        return expand_for_training(self.conversation, conversation=f"{self.probe_id}#s{self.sample_idx}")


def example_from_record(rec: Mapping[str, Any], *, path: object = "<records>", line: int | None = None) -> Example:
    """Build an :class:`Example` from a ``type: "training"`` record (ours or upstream's)."""
    problems: list[Problem] = []
    meta = rec.get("meta")
    training = rec.get("training")
    if not isinstance(meta, dict):
        problems.append(Problem("missing or not an object", line=line, field="meta"))
        meta = {}
    msgs = training.get("messages") if isinstance(training, dict) else None
    user = assistant = None
    conversation: tuple = ()
    if isinstance(msgs, list) and sum(1 for m in msgs if isinstance(m, dict) and m.get("role") == "assistant") > 1:
        conversation = tuple(dict(m) for m in msgs)
    if isinstance(msgs, list):
        for m in msgs:
            if isinstance(m, dict) and m.get("role") == "user" and user is None:
                user = m.get("content")
            elif isinstance(m, dict) and m.get("role") == "assistant":
                assistant = m.get("content")
    if not isinstance(user, str) or not isinstance(assistant, str):
        problems.append(Problem("needs a user and an assistant message with string content", line=line,
                                field="training.messages"))
    for name in ("probe_id", "lek_score"):
        if name not in meta:
            problems.append(Problem("missing", line=line, field=f"meta.{name}"))
    if problems:
        raise DataError(path, problems)
    probe_id = str(meta["probe_id"])
    return Example(
        probe_id=probe_id,
        sample_idx=int(meta.get("sample_idx", 0)),
        category=str(meta.get("category") or "uncategorised"),
        prompt=user,  # type: ignore[arg-type]
        response=assistant,  # type: ignore[arg-type]
        lek_score=float(meta["lek_score"]),
        group=str(meta.get("source_probe") or probe_id),
        meta=dict(meta),
        conversation=conversation,
    )


def load_examples(path: str | os.PathLike[str]) -> list[Example]:
    """Read the kept examples of a distillation file; all bad lines are reported in one error."""
    out: list[Example] = []
    problems: list[Problem] = []
    for n, rec in iter_jsonl(path):
        if rec.get("type") != "training":
            continue
        try:
            out.append(example_from_record(rec, path=path, line=n))
        except DataError as e:
            problems.extend(e.problems)
    if problems:
        raise DataError(path, problems)
    return out


def dedup_per_probe(examples: Sequence[Example], mode: str = "best") -> list[Example]:
    """Keep the highest-scoring (``best``), the first (``first``) or every (``all``) example per probe
    and source (self-distilled answers and each reference model's are deduplicated apart, so the
    reference mix survives: :mod:`lekutils.tasks.augment`).

    ``first`` means the lowest sample index; ties in ``best`` go to the lower sample index.
    The result is sorted by (probe_id, sample_idx).
    """
    if mode not in DEDUP_MODES:
        raise ValueError(f"dedup mode must be one of {DEDUP_MODES}, got {mode!r}")
    if mode == "all":
        return sorted(examples, key=lambda e: e.key)
    by_probe: dict[tuple[str, str], list[Example]] = defaultdict(list)
    for e in examples:
        by_probe[(e.probe_id, e.source)].append(e)
    pick = (lambda es: min(es, key=lambda e: (-e.lek_score, e.sample_idx))) if mode == "best" else (
        lambda es: min(es, key=lambda e: e.sample_idx))
    return sorted((pick(es) for es in by_probe.values()), key=lambda e: e.key)


@dataclass(frozen=True)
class NearDuplicate:
    """An example dropped because it nearly repeats a kept one."""

    dropped: tuple[str, int]
    kept: tuple[str, int]
    jaccard: float


def remove_near_duplicates(examples: Sequence[Example], *, threshold: float = 0.7, k: int = 3,
                           num_perm: int = 128, seed: int = 1) -> tuple[list[Example], list[NearDuplicate]]:
    """Drop responses whose shingle Jaccard with an already kept response is >= ``threshold``.

    Examples are visited best score first (ties: key order), so of a near-duplicate pair the
    better one stays. LSH only proposes candidates; a pair counts only if its exact Jaccard
    reaches the threshold. Returns (kept in input order, dropped pairs).
    """
    from datasketch import MinHash, MinHashLSH

    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
    # LSH proposes candidates a bit below the real threshold (recall); exact Jaccard decides.
    lsh = MinHashLSH(threshold=max(0.05, min(0.9, threshold - 0.1)), num_perm=num_perm)
    sets: dict[int, set[str]] = {}
    kept_idx: set[int] = set()
    dropped: list[NearDuplicate] = []
    order = sorted(range(len(examples)), key=lambda i: (-examples[i].lek_score, examples[i].key))
    for i in order:
        sh = shingles(examples[i].response, k)
        sets[i] = sh
        mh = MinHash(num_perm=num_perm, seed=seed)
        for s in sorted(sh):
            mh.update(s.encode("utf-8"))
        best: tuple[float, int] | None = None
        for cand in lsh.query(mh):
            j = jaccard(sh, sets[int(cand)])
            if j >= threshold and (best is None or j > best[0]):
                best = (j, int(cand))
        if best is not None:
            dropped.append(NearDuplicate(examples[i].key, examples[best[1]].key, round(best[0], 4)))
            continue
        lsh.insert(str(i), mh)
        kept_idx.add(i)
    return [e for i, e in enumerate(examples) if i in kept_idx], dropped


def category_stats(examples: Iterable[Example]) -> pd.DataFrame:
    """Per-category count, mean, min and max ``lek_score`` (plus an ``ALL`` row)."""
    rows = [{"category": e.category, "lek_score": e.lek_score} for e in examples]
    cols = ["category", "count", "mean", "min", "max"]
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    g = df.groupby("category")["lek_score"].agg(["count", "mean", "min", "max"]).reset_index()
    total = pd.DataFrame([{"category": "ALL", "count": len(df), "mean": df.lek_score.mean(),
                           "min": df.lek_score.min(), "max": df.lek_score.max()}])
    out = pd.concat([g, total], ignore_index=True)[cols]
    out["mean"] = out["mean"].round(2)
    return out


def split_train_valid(examples: Sequence[Example], *, valid_fraction: float = 0.1,
                      seed: int = 0) -> tuple[list[Example], list[Example]]:
    """Seeded train/valid split; at least one valid example whenever there are two or more.

    Whole groups (a probe and its rephrasings, or several samples of one probe) go to one side,
    so validation prompts are unseen in training, as long as groups fit in the ``valid_fraction``
    target; when none does (tiny sets) examples are split individually.
    Both lists keep the input order.
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    n = len(examples)
    if n < 2:
        return list(examples), []
    target = min(n - 1, max(1, round(n * valid_fraction)))
    rng = random.Random(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        groups[e.group].append(i)
    valid_idx: set[int] = set()
    if len(groups) >= 2:
        names = sorted(groups)
        rng.shuffle(names)
        for g in names:
            if len(valid_idx) + len(groups[g]) <= target:  # whole groups, never past the target
                valid_idx.update(groups[g])
    if not valid_idx:  # every group is larger than the target (tiny sets): split examples
        log.info("split: no group fits a %d-example valid set; splitting examples", target)
        valid_idx = set(rng.sample(range(n), target))
    return ([e for i, e in enumerate(examples) if i not in valid_idx],
            [e for i, e in enumerate(examples) if i in valid_idx])


@dataclass
class ExtractResult:
    """What :func:`extract` did: counts per step, dropped keys, statistics, output paths."""

    loaded: int
    after_dedup: int
    near_duplicates: list[NearDuplicate]
    rejected_in_review: list[tuple[str, int]]
    train: list[Example]
    valid: list[Example]
    stats: pd.DataFrame
    train_path: Path
    valid_path: Path
    #: examples left out because the phase requires review and they were not accepted
    unreviewed: list[tuple[str, int]] = field(default_factory=list)
    review_required: bool = False

    def counts(self) -> dict[str, int]:
        """Counts per step; ``train``/``valid`` are examples, ``*_lines`` the lines written (a
        conversation gives one line per assistant turn), ``conversations`` the multi-turn examples."""
        return {"loaded": self.loaded, "after_dedup": self.after_dedup,
                "near_duplicates": len(self.near_duplicates), "rejected_in_review": len(self.rejected_in_review),
                "unreviewed": len(self.unreviewed), "review_required": self.review_required,
                "train": len(self.train), "valid": len(self.valid),
                "train_lines": sum(len(e.lines()) for e in self.train),
                "valid_lines": sum(len(e.lines()) for e in self.valid),
                "conversations": sum(1 for e in self.train + self.valid if e.conversation)}

    def source_counts(self) -> dict[str, int]:
        """Examples written (train + valid) per source (``"self"`` first, then reference specs)."""
        out: dict[str, int] = {}
        for e in sorted(self.train + self.valid, key=lambda e: e.source != "self"):
            out[e.source] = out.get(e.source, 0) + 1
        return out

    def reference_share(self) -> float | None:
        """The share of reference examples among those written (None when nothing was written)."""
        n = len(self.train) + len(self.valid)
        return round(sum(e.source != "self" for e in self.train + self.valid) / n, 4) if n else None


@dataclass
class Candidates:
    """Kept examples after per-probe dedup and near-duplicate removal (what review and split see)."""

    loaded: int
    after_dedup: int
    examples: list[Example]
    near_duplicates: list[NearDuplicate]


def candidates(raw_path: str | os.PathLike[str], *, dedup: str = "best", near_dup_threshold: float = 0.7,
               shingle_k: int = 3, seed: int = 0) -> Candidates:
    """Load the kept examples of ``raw_path``, dedup per probe, drop near-duplicates."""
    examples = load_examples(raw_path)
    deduped = dedup_per_probe(examples, dedup)
    unique, dups = remove_near_duplicates(deduped, threshold=near_dup_threshold, k=shingle_k, seed=seed + 1)
    return Candidates(len(examples), len(deduped), unique, dups)


def extract(raw_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, dedup: str = "best",
            near_dup_threshold: float = 0.7, shingle_k: int = 3, rejected: Iterable[tuple[str, int]] = (),
            valid_fraction: float = 0.1, seed: int = 0, require_review: bool = False,
            accepted: Iterable[tuple[str, int]] = ()) -> ExtractResult:
    """Run dedup -> near-dup -> review -> split; write ``train.jsonl`` / ``valid.jsonl``.

    ``rejected`` holds the (probe_id, sample_idx) keys a reviewer rejected and ``accepted`` those
    accepted (see :func:`lekutils.report.review.rejected_keys` / ``accepted_keys``). With
    ``require_review`` (phase 3's safety review) only accepted examples are written; the others
    are counted as ``unreviewed``. A conversation (multi-turn example) is written as one line per
    assistant turn (:meth:`Example.lines`), all in the same split. Raises ``ValueError`` when
    nothing is left to train on.
    """
    cand = candidates(raw_path, dedup=dedup, near_dup_threshold=near_dup_threshold, shingle_k=shingle_k,
                      seed=seed)
    rejected_set, accepted_set = set(rejected), set(accepted)
    reviewed = [e for e in cand.examples if e.key not in rejected_set]
    dropped_review = [e.key for e in cand.examples if e.key in rejected_set]
    unreviewed = [e.key for e in reviewed if e.key not in accepted_set] if require_review else []
    if require_review:
        reviewed = [e for e in reviewed if e.key in accepted_set]
    if len(reviewed) < 2:
        hint = (f"; this phase requires review: accept examples in the review panel or with `python -m lekutils "
                f"review accept {raw_path} --ids ...` ({len(unreviewed)} unreviewed)" if require_review else "")
        raise ValueError(f"{raw_path}: {len(reviewed)} training example(s) left, at least 2 are needed (one for "
                         f"validation): kept {cand.loaded}, after dedup "
                         f"{cand.after_dedup}, near-duplicates {len(cand.near_duplicates)}, rejected in review "
                         f"{len(dropped_review)}){hint}")
    train, valid = split_train_valid(reviewed, valid_fraction=valid_fraction, seed=seed)
    out = Path(out_dir)
    train_path = atomic_write_jsonl(out / "train.jsonl", [line for e in train for line in e.lines()])
    valid_path = atomic_write_jsonl(out / "valid.jsonl", [line for e in valid for line in e.lines()])
    log.info("extracted %d train / %d valid examples from %s", len(train), len(valid), raw_path)
    return ExtractResult(cand.loaded, cand.after_dedup, cand.near_duplicates, dropped_review, train, valid,
                         category_stats(reviewed), train_path, valid_path, unreviewed, require_review)


def has_multi_turn(data_dir: str | os.PathLike[str]) -> bool:
    """Whether ``train.jsonl`` or ``valid.jsonl`` of a data folder holds multi-turn examples (a line
    with an assistant message before its last message, as :meth:`Example.lines` writes them)."""
    for name in ("train.jsonl", "valid.jsonl"):
        path = Path(data_dir) / name
        if not path.is_file():
            continue
        for _, rec in iter_jsonl(path):
            msgs = rec.get("messages") or []
            if int(rec.get("turns") or 1) > 1 or any(m.get("role") == "assistant" for m in msgs[:-1]):
                return True
    return False


def check_mask_prompt(data_dir: str | os.PathLike[str], mask_prompt: bool) -> None:
    """Refuse to train on multi-turn expansions without ``mask_prompt``: mlx-lm would then train every
    token, the user turns and the earlier answers (repeated once per expansion) included."""
    if not mask_prompt and has_multi_turn(data_dir):
        raise ValueError(f"{data_dir} holds multi-turn conversations (one example per assistant turn), which "
                         "need mask_prompt: true so that each example trains only its last assistant turn; set "
                         "mask_prompt: true in the phase's train section of the curriculum table")


def check_mlx_dataset(data_dir: str | os.PathLike[str], tokenizer: Any, *, mask_prompt: bool = True) -> dict[str, int]:
    """Load ``train``/``valid`` with ``mlx_lm.tuner.datasets.load_dataset`` and tokenize every example.

    Returns ``{"train": n, "valid": n, "train_tokens": n, "valid_tokens": n}``; raises if a line fails.
    """
    from types import SimpleNamespace

    from mlx_lm.tuner.datasets import load_dataset

    args = SimpleNamespace(data=str(data_dir), train=True, test=False, hf_dataset=False, mask_prompt=mask_prompt)
    train, valid, _ = load_dataset(args, tokenizer)
    out: dict[str, int] = {}
    for name, ds in (("train", train), ("valid", valid)):
        total = 0
        for i in range(len(ds)):
            tokens, offset = ds.process(ds[i])
            if not tokens or offset >= len(tokens):
                raise ValueError(f"{data_dir}/{name}.jsonl line {i + 1}: empty completion after tokenization")
            total += len(tokens)
        out[name], out[f"{name}_tokens"] = len(ds), total
    return out
