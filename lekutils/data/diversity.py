"""Diversity of prompt banks and held-out discipline against the evaluation probes.

Similarity is the Jaccard index of word 3-shingles (lower-cased, punctuation ignored:
:func:`lekutils.data.text.shingles`), the measure the extraction step already uses for responses.

- **Near-duplicates** inside a phase: MinHash LSH (``datasketch``, 128 permutations, LSH
  threshold 0.1 below) proposes candidate pairs, the exact Jaccard confirms them. Threshold
  :data:`NEAR_DUP_THRESHOLD` = 0.5. The composer removes near-duplicates with an exact index
  (:class:`NearDupIndex`); the exact closest pair (below the threshold) confirms a rate of 0.
  Records of one scenario (``scenario`` field: a base probe and its rephrasings, the variants of
  one phase-2/3 scenario) share their scenario text on purpose, so the rate is reported across
  scenarios and, separately, over all pairs.
- **Closest pair**: the exact Jaccard of every pair of records from different scenarios (no
  estimate).
- **Held-out**: :func:`heldout_overlap` compares every training prompt with every evaluation probe,
  exactly (the evaluation set is small): same id, same normalised text, or Jaccard >= threshold.
- **distinct-n**: distinct word n-grams / all word n-grams over the phase (n = 1, 2, 3); it falls
  with the size of a bank, so distinct-2 is also given for 50 random prompts (mean of 20 draws).
- **Nearest-neighbour Jaccard**: for each prompt, the exact Jaccard of the most similar prompt of
  another scenario; median and 95th percentile.

The text of a multi-turn record is its user turns joined (``turns``), else its ``prompt``.
"""

from __future__ import annotations

import os
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lekutils.core.errors import DataError, Problem
from lekutils.data.text import jaccard, shingles

#: Jaccard (word 3-shingles) at or above which two prompts count as near-duplicates.
NEAR_DUP_THRESHOLD = 0.5
#: Jaccard at or above which a training prompt counts as overlapping an evaluation probe.
HELDOUT_THRESHOLD = 0.3
SHINGLE_K = 3
NUM_PERM = 128

_WORD = re.compile(r"\w+", re.UNICODE)


def _get(rec: Any, key: str, default: Any = None) -> Any:
    if isinstance(rec, Mapping):
        return rec.get(key, default)
    if hasattr(rec, key):
        return getattr(rec, key)
    return getattr(rec, "extra", {}).get(key, default)


def record_id(rec: Any) -> str:
    return str(_get(rec, "id"))


def record_text(rec: Any) -> str:
    """A record's user text: its ``turns`` joined by blank lines where present, else its ``prompt``."""
    turns = _get(rec, "turns")
    if turns:
        return "\n\n".join(turns)
    return str(_get(rec, "prompt", ""))


def record_group(rec: Any) -> str:
    """The scenario a record belongs to (``scenario``, else ``source_probe``, else its own id)."""
    return str(_get(rec, "scenario") or _get(rec, "source_probe") or record_id(rec))


def normalise(text: str) -> str:
    """Lower-cased words joined by single spaces (the house rule's held-out comparison)."""
    return " ".join(_WORD.findall(text.lower()))


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Distinct word n-grams divided by all word n-grams (lower-cased) over ``texts``."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        words = _WORD.findall(text.lower())
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def _minhash(sh: set[str]) -> Any:
    from datasketch import MinHash

    mh = MinHash(num_perm=NUM_PERM, seed=1)
    mh.update_batch([s.encode("utf-8") for s in sorted(sh)])
    return mh


def _lsh_threshold(threshold: float) -> float:
    # LSH proposes candidates a bit below the real threshold (recall); exact Jaccard decides.
    return max(0.05, min(0.9, threshold - 0.1))


class NearDupIndex:
    """Incremental near-duplicate index with exact Jaccard (used by the composer and the writer).

    An inverted index from shingle to texts counts the shared shingles of every indexed text that
    shares at least one, so the Jaccard is exact and no pair is missed (MinHash LSH, used for the
    measured rate, finds a pair at the threshold only with high probability).
    ``query(text, group)`` returns the closest indexed text of another group at or above the
    threshold as ``(jaccard, key)``, or ``None``; ``add`` indexes a text under a key and group.
    """

    def __init__(self, threshold: float = NEAR_DUP_THRESHOLD):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self._sets: dict[str, tuple[int, str]] = {}
        self._postings: dict[str, list[str]] = defaultdict(list)

    def query(self, text: str, group: str | None = None) -> tuple[float, str] | None:
        sh = shingles(text, SHINGLE_K)
        shared: Counter[str] = Counter()
        for s in sh:
            shared.update(self._postings.get(s, ()))
        best: tuple[float, str] | None = None
        for key, inter in shared.items():
            size, other_group = self._sets[key]
            if group is not None and other_group == group:
                continue
            j = inter / (len(sh) + size - inter)
            if j >= self.threshold and (best is None or (j, key) > best):
                best = (j, key)
        return best

    def add(self, key: str, text: str, group: str | None = None) -> None:
        sh = shingles(text, SHINGLE_K)
        self._sets[key] = (len(sh), group if group is not None else key)
        for s in sh:
            self._postings[s].append(key)


def near_duplicate_pairs(records: Sequence[Any],
                         threshold: float = NEAR_DUP_THRESHOLD) -> list[tuple[str, str, float, bool]]:
    """Every pair with Jaccard >= ``threshold``: ``(id_a, id_b, jaccard, same_scenario)`` (LSH + exact)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=_lsh_threshold(threshold), num_perm=NUM_PERM)
    sets = [shingles(record_text(r), SHINGLE_K) for r in records]
    mhs = [_minhash(s) for s in sets]
    for i, mh in enumerate(mhs):
        lsh.insert(str(i), mh)
    pairs = []
    for i, mh in enumerate(mhs):
        for key in lsh.query(mh):
            j_idx = int(key)
            if j_idx <= i:
                continue
            j = jaccard(sets[i], sets[j_idx])
            if j >= threshold:
                same = record_group(records[i]) == record_group(records[j_idx])
                pairs.append((record_id(records[i]), record_id(records[j_idx]), round(j, 4), same))
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))


def nearest_neighbours(records: Sequence[Any], *, across_scenarios: bool = True) -> list[tuple[float, int]]:
    """For each record, ``(jaccard, index)`` of its most similar other record (exact, all pairs).

    Same-scenario records are skipped unless ``across_scenarios`` is false; ``(0.0, -1)`` where no
    other record shares a shingle.
    """
    sets = [shingles(record_text(r), SHINGLE_K) for r in records]
    groups = [record_group(r) for r in records]
    best = [(0.0, -1)] * len(sets)
    for i in range(len(sets)):
        a, la = sets[i], len(sets[i])
        for j in range(i + 1, len(sets)):
            if across_scenarios and groups[i] == groups[j]:
                continue
            b = sets[j]
            inter = len(a & b)
            if not inter:
                continue
            sim = inter / (la + len(b) - inter)
            if sim > best[i][0]:
                best[i] = (sim, j)
            if sim > best[j][0]:
                best[j] = (sim, i)
    return best


def closest_pair(records: Sequence[Any], *, across_scenarios: bool = True) -> tuple[str, str, float] | None:
    """The most similar pair of records (exact Jaccard over all pairs), ignoring same-scenario pairs."""
    nn = nearest_neighbours(records, across_scenarios=across_scenarios)
    if not nn or max(nn)[1] < 0:
        return None
    i = max(range(len(nn)), key=lambda k: (nn[k][0], -k))
    a, b = sorted((i, nn[i][1]))
    return record_id(records[a]), record_id(records[b]), round(nn[i][0], 4)


def distinct_n_sampled(texts: Sequence[str], n: int, size: int = 50, draws: int = 20, seed: int = 0) -> float:
    """Mean distinct-n over ``draws`` random samples of ``size`` texts (compares banks of any size)."""
    if len(texts) <= size:
        return distinct_n(texts, n)
    rng = random.Random(seed)
    return sum(distinct_n(rng.sample(list(texts), size), n) for _ in range(draws)) / draws


class EvalSet:
    """Evaluation probes prepared once for repeated held-out checks (shingles, normalised texts)."""

    def __init__(self, eval_probes: Sequence[Any]):
        self.items = [(record_id(e), shingles(record_text(e), SHINGLE_K), normalise(record_text(e)))
                      for e in eval_probes]

    def overlaps(self, rec: Any, threshold: float = HELDOUT_THRESHOLD) -> list[tuple[str, str, float]]:
        """``(train_id, eval_id, jaccard)`` for each evaluation probe that ``rec`` overlaps."""
        tid, text = record_id(rec), record_text(rec)
        sh, norm = shingles(text, SHINGLE_K), normalise(text)
        out = []
        for eid, esh, enorm in self.items:
            j = 1.0 if norm == enorm else jaccard(sh, esh)
            if tid == eid or j >= threshold:
                out.append((tid, eid, round(j, 4)))
        return out


def heldout_overlap(train_prompts: Sequence[Any], eval_probes: Sequence[Any],
                    threshold: float = HELDOUT_THRESHOLD) -> list[tuple[str, str, float]]:
    """Training records that overlap the evaluation set: ``(train_id, eval_id, jaccard)``.

    A pair is reported when the ids are equal, the normalised texts are equal (Jaccard reported as
    1.0), or the exact Jaccard of word 3-shingles is >= ``threshold``. Records are dicts (seed
    format, optional ``turns``) or :class:`lekutils.data.probes.Probe` objects; ``eval_probes`` may also
    be an :class:`EvalSet`. An empty list means no overlap.
    """
    evals = eval_probes if isinstance(eval_probes, EvalSet) else EvalSet(eval_probes)
    return [hit for rec in train_prompts for hit in evals.overlaps(rec, threshold)]


def refuse_heldout_overlap(train_prompts: Sequence[Any], eval_files: Sequence[str | os.PathLike[str]],
                           threshold: float = HELDOUT_THRESHOLD) -> None:
    """Refuse training prompts that overlap the evaluation probes of ``eval_files`` (by id, by
    normalised text, or a word-3-shingle Jaccard >= ``threshold``): a :class:`DataError` naming every
    overlapping pair. Held-out discipline: the evaluation set must never be trained on."""
    from lekutils.data.probes import load_probes

    if not eval_files:
        return
    hits = heldout_overlap(train_prompts, load_probes(*eval_files), threshold)
    if hits:
        raise DataError(", ".join(str(f) for f in eval_files), [
            Problem(f"training prompt {t!r} overlaps evaluation probe {e!r} (Jaccard {j:.2f} >= {threshold}); "
                    "remove it from the training prompts", field=t) for t, e, j in hits])


def closest_to_eval(records: Sequence[Any], eval_probes: Sequence[Any]) -> tuple[str, str, float] | None:
    """The training record most similar to any evaluation probe: ``(train_id, eval_id, jaccard)``."""
    eval_sets = [(record_id(e), shingles(record_text(e), SHINGLE_K)) for e in eval_probes]
    best: tuple[float, str, str] | None = None
    for rec in records:
        sh = shingles(record_text(rec), SHINGLE_K)
        for eid, esh in eval_sets:
            j = jaccard(sh, esh)
            if best is None or j > best[0]:
                best = (j, record_id(rec), eid)
    return None if best is None else (best[1], best[2], round(best[0], 4))


@dataclass
class PhaseFigures:
    """The diversity figures of one phase's prompt bank."""

    name: str
    count: int
    scenarios: int
    near_dup_rate: float          # records with a near-duplicate in another scenario / records
    near_dup_rate_all: float      # records with a near-duplicate anywhere (own scenario included) / records
    distinct: tuple[float, float, float]
    distinct2_at50: float         # distinct-2 of 50 random prompts, mean of 20 draws
    nn_median: float              # median over records of the nearest other-scenario Jaccard
    nn_p95: float                 # its 95th percentile
    closest: tuple[str, str, float] | None
    closest_eval: tuple[str, str, float] | None
    heldout_hits: int

    def row(self) -> str:
        """A markdown table row (see :func:`figures_table`)."""
        cp = f"{self.closest[2]:.3f} ({self.closest[0]} / {self.closest[1]})" if self.closest else "-"
        ce = "-"
        if self.closest_eval:
            ce = f"{self.closest_eval[2]:.3f} ({self.closest_eval[0]} / {self.closest_eval[1]})"
        d1, d2, d3 = self.distinct
        return (f"| {self.name} | {self.count} | {self.scenarios} | {self.near_dup_rate:.1%} | "
                f"{self.near_dup_rate_all:.1%} | {d1:.3f} / {d2:.3f} / {d3:.3f} | {self.distinct2_at50:.3f} | "
                f"{self.nn_median:.3f} / {self.nn_p95:.3f} | {cp} | {ce} | {self.heldout_hits} |")


def measure(name: str, records: Sequence[Any], eval_probes: Sequence[Any] = (),
            threshold: float = NEAR_DUP_THRESHOLD, heldout_threshold: float = HELDOUT_THRESHOLD) -> PhaseFigures:
    """All figures of one phase (see the module docstring for the definitions)."""
    pairs = near_duplicate_pairs(records, threshold)
    across = {p for a, b, _, same in pairs if not same for p in (a, b)}
    anywhere = {p for a, b, _, _ in pairs for p in (a, b)}
    texts = [record_text(r) for r in records]
    n = len(records) or 1
    nn = sorted(j for j, _ in nearest_neighbours(records)) or [0.0]
    return PhaseFigures(
        name=name, count=len(records), scenarios=len({record_group(r) for r in records}),
        near_dup_rate=len(across) / n, near_dup_rate_all=len(anywhere) / n,
        distinct=tuple(round(distinct_n(texts, k), 4) for k in (1, 2, 3)),  # type: ignore[arg-type]
        distinct2_at50=round(distinct_n_sampled(texts, 2), 4),
        nn_median=round(nn[len(nn) // 2], 4), nn_p95=round(nn[min(len(nn) - 1, int(0.95 * len(nn)))], 4),
        closest=closest_pair(records), closest_eval=closest_to_eval(records, eval_probes) if eval_probes else None,
        heldout_hits=len(heldout_overlap(records, eval_probes, heldout_threshold)) if eval_probes else 0,
    )


def figures_table(figures: Iterable[PhaseFigures]) -> str:
    """The figures as a markdown table (one row per phase)."""
    head = ("| bank | prompts | scenarios | near-dup rate (across scenarios) | near-dup rate (all pairs) | "
            "distinct-1 / 2 / 3 | distinct-2 @50 | nearest-neighbour Jaccard median / p95 | "
            "closest pair, exact Jaccard (ids) | closest to eval, exact Jaccard (ids) | held-out hits |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|")
    return "\n".join([head, *(f.row() for f in figures)])


def measure_files(paths: Sequence[Any], eval_path: Any, threshold: float = NEAR_DUP_THRESHOLD,
                  heldout_threshold: float = HELDOUT_THRESHOLD) -> list[PhaseFigures]:
    """:func:`measure` each prompt file (seed format, loaded raw so ``turns`` stay) against ``eval_path``."""
    from pathlib import Path

    from lekutils.core.jsonl import read_json_file
    from lekutils.data.probes import load_probes

    load_probes(*paths)  # validate the files first (ids unique across them, required fields)
    evals = [p.to_dict() for p in load_probes(eval_path)]
    return [measure(Path(p).name, read_json_file(p, "prompt file"), evals, threshold,
                    heldout_threshold) for p in paths]
