"""External augmentation of self-distillation: stronger models' reference answers mixed into a phase.

The curriculum (phases 2 and 4) adds a stronger model's answers to the self-distilled ones "to
prevent mode collapse": ``reference_samples`` answers per probe from each of ``reference_models``
(any model specs, opened through :func:`lekutils.engine.factory.open_generator`), scored with the
phase's scorer and kept by the phase's keep rule (``reference_threshold`` where given), are mixed
with the kept self-distilled answers so that references make ``reference_fraction`` (default 0.3)
of the training set.

The mix rule (:func:`plan_mix`): every kept self-distilled answer is used; references are added up
to the fraction (the count whose share comes closest to it), chosen by :func:`select_references`
(seeded, spread over the probes round-robin). Nothing is ever duplicated: with too few kept
references all of them are used and the achieved share is lower; with more than needed the rest are
kept but not used (``used: false``). Either is said in the summary's ``mix.note``.

Reference answers sit in the phase's ``raw.jsonl`` beside the self-distilled ones with ``source``
(``"self"`` or the reference spec), ``source_model`` (the model's id) and a sample index of
``REFERENCE_INDEX_BASE * (i + 1) + s`` for sample ``s`` of reference model ``i`` (so keys, review
ids and dedup stay unique: ``P01:1003`` is reference model 1's sample 3 of probe P01).
"""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lekutils.core.errors import Problem
from lekutils.core.hashing import sha256_bytes

SELF = "self"
DEFAULT_FRACTION = 0.3
DEFAULT_SAMPLES = 10
#: sample ``s`` of reference model ``i`` (0-based) has ``sample_idx = REFERENCE_INDEX_BASE * (i + 1) + s``
REFERENCE_INDEX_BASE = 1000
#: the notebook / curriculum parameters this module checks
PARAMETERS = ("reference_models", "reference_samples", "reference_fraction", "reference_threshold")


# ---------------------------------------------------------------------------------------------- checks

def _spec_problem(spec: Any) -> str | None:
    """Why ``spec`` is no usable model spec (None when it is): it must resolve (file or folder
    present, known embedded name, or with the remote backend a well-formed ``openai:`` spec; without
    it an ``openai:<model>@<url>`` shape check)."""
    if not isinstance(spec, str) or not spec.strip():
        return f"a model spec must be a non-empty string, got {spec!r}"
    import importlib.util

    remote_backend = importlib.util.find_spec("lekutils.engine.remote") is not None
    try:
        if not remote_backend and re.match(r"^[a-z][a-z0-9+.-]*:", spec) and not spec.startswith("embedded:"):
            scheme = spec.split(":", 1)[0]
            if scheme != "openai":
                return f"unknown model spec {spec!r} (scheme {scheme!r})"
            if not re.fullmatch(r"openai:[^@\s]+@https?://\S+", spec):
                return f"model spec {spec!r}: expected openai:<model>@<http(s) base url>"
        else:  # with the remote backend, resolve() parses openai:<model>@<url>[,<url>...] itself
            from lekutils.tasks.validate import check_model

            check_model(spec)
    except (ValueError, OSError) as e:  # DataError and ModelSpecError are ValueErrors
        first = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
        return first.removesuffix(" Valid forms:")
    return None


def check_parameters(values: Mapping[str, Any], *, check_specs: bool = True) -> list[Problem]:
    """Problems with a phase's reference parameters (``field`` = the parameter's name).

    ``reference_models``: a list of distinct, valid model specs; ``reference_samples``: an integer
    >= 0 (>= 1 when there are reference models, below :data:`REFERENCE_INDEX_BASE`);
    ``reference_fraction``: in [0, 1); ``reference_threshold``: a number or None.
    """
    problems: list[Problem] = []
    models = values.get("reference_models", ())
    if models is None:
        models = ()
    if isinstance(models, str) or not isinstance(models, (list, tuple)):
        problems.append(Problem(f"must be a list of model specs, got {models!r}", field="reference_models"))
        models = ()
    seen: set[str] = set()
    for i, spec in enumerate(models):
        why = _spec_problem(spec) if check_specs or not isinstance(spec, str) else None
        if why:
            problems.append(Problem(why, field=f"reference_models[{i}]"))
        elif spec in seen:
            problems.append(Problem(f"{spec!r} is listed twice", field=f"reference_models[{i}]"))
        seen.add(spec if isinstance(spec, str) else repr(spec))
    n = values.get("reference_samples", DEFAULT_SAMPLES)
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        problems.append(Problem(f"must be an integer >= 0, got {n!r}", field="reference_samples"))
    elif models and not 1 <= n < REFERENCE_INDEX_BASE:
        problems.append(Problem(f"must be in [1, {REFERENCE_INDEX_BASE}) when reference_models are given, got {n}",
                                field="reference_samples"))
    f = values.get("reference_fraction", DEFAULT_FRACTION)
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= f < 1.0 or math.isnan(f):
        problems.append(Problem(f"must be a number in [0, 1), got {f!r}", field="reference_fraction"))
    t = values.get("reference_threshold")
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or math.isnan(t)):
        problems.append(Problem(f"must be a number or null (the phase's keep_threshold), got {t!r}",
                                field="reference_threshold"))
    return problems


def check_reference_parameters(values: Any, where: str = "10_self_distill parameters") -> None:
    """Raise a :class:`~lekutils.core.errors.DataError` naming ``where`` and every bad reference
    field (``values``: a mapping or a :class:`~lekutils.tasks.distill.DistillSettings`)."""
    from dataclasses import asdict, is_dataclass

    from lekutils.core.errors import DataError

    problems = check_parameters(asdict(values) if is_dataclass(values) else values)
    if problems:
        raise DataError(where, problems)


def runner_problems(notebook: str | Path, values: Mapping[str, Any], sources: Mapping[str, str]) -> list[str]:
    """The runner's check of resolved parameters (before anything runs): for the distillation
    notebook, each bad reference field with the file and section its value came from."""
    if Path(notebook).stem != "10_self_distill":
        return []
    out = []
    for p in check_parameters(values):
        name = (p.field or "").split("[")[0]
        origin = sources.get(name, "the notebook's default")
        out.append(f"'{p.field}': {p.message} (from {origin})")
    return out


# ---------------------------------------------------------------------------------------------- naming

def sample_index(reference: int, sample: int) -> int:
    """The raw file's ``sample_idx`` of sample ``sample`` of reference model ``reference`` (0-based)."""
    return REFERENCE_INDEX_BASE * (reference + 1) + sample


def spec_slug(spec: str) -> str:
    """A file-name-safe, unique word for a model spec: readable part + 8 hex of its hash."""
    tail = spec.rstrip("/").split("@")[0].split("/")[-1].split(":")[-1]
    word = re.sub(r"[^A-Za-z0-9._-]+", "-", tail).strip("-.")[:40] or "model"
    return f"{word}-{sha256_bytes(spec.encode('utf-8'))[-8:]}"


def reference_raw_path(raw_path: str | Path, spec: str) -> Path:
    """The pseudo output path of one reference model's task: ``<stem>.ref-<slug>.jsonl`` beside the
    raw file; its work file (the store a kill -9 resumes from) is ``<stem>.ref-<slug>.partial.jsonl``."""
    raw = Path(raw_path)
    return raw.with_name(f"{raw.stem}.ref-{spec_slug(spec)}.jsonl")


def model_id(reference: Mapping[str, Any], record: Mapping[str, Any] | None = None) -> str:
    """A model's id for ``source_model``: what the server reported (a remote record's
    ``served_model``, else the first id among its reference's ``server_models``), else the model's
    name, else its spec."""
    if record and record.get("served_model"):
        return str(record["served_model"])
    served = [v for v in (reference.get("server_models") or {}).values() if v]
    return str(served[0] if served else reference.get("name") or reference.get("spec"))


# ---------------------------------------------------------------------------------------------- the mix

@dataclass(frozen=True)
class MixPlan:
    """How many kept answers of each kind go into the training set, and why."""

    fraction: float          # the target share of references
    self_kept: int
    reference_kept: int
    self_used: int
    reference_used: int
    wanted_references: int   # the count that comes closest to ``fraction`` with every self example used

    @property
    def total(self) -> int:
        return self.self_used + self.reference_used

    @property
    def achieved(self) -> float | None:
        """The share of references in the training set (None when it is empty)."""
        return round(self.reference_used / self.total, 4) if self.total else None

    @property
    def limited_by(self) -> str | None:
        """``"references"`` (too few kept references: all used, share below target), ``"self"`` (too
        few self-distilled examples to use every kept reference), or None."""
        if self.reference_kept < self.wanted_references:
            return "references"
        if self.reference_kept > self.reference_used:
            return "self"
        return None

    def note(self) -> str:
        """One sentence for the summary."""
        if self.fraction == 0.0:
            return f"reference_fraction 0: no reference used ({self.reference_kept} kept)"
        if self.limited_by == "references":
            return (f"too few references: {self.reference_kept} kept of {self.wanted_references} wanted for "
                    f"{self.fraction:.0%}; all used, {self.achieved or 0:.1%} achieved")
        if self.limited_by == "self":
            why = "no self-distilled example was kept" if not self.self_kept else (
                f"{self.self_kept} self-distilled example(s) kept")
            return (f"too few self-distilled examples: {why}, so {self.reference_used} of {self.reference_kept} kept "
                    f"references used ({self.achieved or 0:.1%} achieved, target {self.fraction:.0%})")
        return f"{self.reference_used} references, {self.self_used} self-distilled ({self.achieved or 0:.1%} achieved)"

    def to_dict(self) -> dict[str, Any]:
        return {"target_fraction": self.fraction, "achieved_fraction": self.achieved,
                "self_fraction": None if self.achieved is None else round(1.0 - self.achieved, 4),
                "self_kept": self.self_kept, "reference_kept": self.reference_kept, "self_used": self.self_used,
                "reference_used": self.reference_used, "wanted_references": self.wanted_references,
                "total_used": self.total, "limited_by": self.limited_by, "note": self.note()}


def wanted_references(n_self: int, fraction: float) -> int:
    """The number of references ``n`` whose share ``n / (n_self + n)`` comes closest to ``fraction``
    (ties: the smaller); 0 when ``n_self`` is 0 (references never exceed their share)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"reference_fraction must be in [0, 1), got {fraction}")
    if n_self <= 0 or fraction == 0.0:
        return 0
    x = n_self * fraction / (1.0 - fraction)
    lo, hi = math.floor(x), math.ceil(x)
    return min((lo, hi), key=lambda n: (abs(n / (n_self + n) - fraction), n))


def plan_mix(self_kept: int, reference_kept: int, fraction: float) -> MixPlan:
    """Every kept self-distilled example, plus ``min(reference_kept, wanted_references(...))`` references."""
    if self_kept < 0 or reference_kept < 0:
        raise ValueError("kept counts must be >= 0")
    want = wanted_references(self_kept, fraction)
    return MixPlan(float(fraction), self_kept, reference_kept, self_kept, min(reference_kept, want), want)


def select_references(records: Sequence[Mapping[str, Any]], n: int, seed: int = 0) -> list[Mapping[str, Any]]:
    """``n`` of the kept reference records, deterministic for a seed: probes in a seeded order, one
    record per probe per round (round-robin, so the references spread over the probes), each probe's
    records in a seeded order. Never returns a record twice; the result is in the input order."""
    if n <= 0:
        return []
    rng = random.Random(f"lekutils.reference-mix:{seed}")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[str(r["prompt_id"])].append(i)
    names = sorted(groups)
    rng.shuffle(names)
    queues = []
    for name in names:
        idx = sorted(groups[name], key=lambda i: (str(records[i].get("source")), int(records[i]["sample_idx"])))
        rng.shuffle(idx)
        queues.append(idx)
    picked: list[int] = []
    while len(picked) < n and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop(0))
    return [records[i] for i in sorted(picked)]


def apply_mix(records: Sequence[dict[str, Any]], fraction: float, seed: int = 0) -> MixPlan:
    """Mark which kept records go into the training set (``used``), in place.

    ``records`` are a phase's records after the keep rule (``kept``; ``source`` = ``"self"`` or a
    reference spec). A kept record left out by the mix becomes ``type: "generation"`` with
    ``used: false`` and ``mix_dropped: true`` (its ``training`` and ``meta`` removed), so extraction
    never sees it.
    """
    kept_self = [r for r in records if r.get("kept") and r.get("source", SELF) == SELF]
    kept_ref = [r for r in records if r.get("kept") and r.get("source", SELF) != SELF]
    plan = plan_mix(len(kept_self), len(kept_ref), fraction)
    chosen = {id(r) for r in select_references(kept_ref, plan.reference_used, seed)}
    for r in records:
        used = bool(r.get("kept")) and (r.get("source", SELF) == SELF or id(r) in chosen)
        r["used"] = used
        if r.get("kept") and not used:
            r.update({"type": "generation", "mix_dropped": True})
            r.pop("training", None)
            r.pop("meta", None)
    return plan


# ---------------------------------------------------------------------------------------------- statistics

def source_stats(records: Sequence[Mapping[str, Any]], *, seed: int = 0) -> list[dict[str, Any]]:
    """Per source (``self`` first, then the references in order of appearance): its spec and model
    id, generated / kept / used counts, and the score distribution of all its generations (n,
    mean, median, 95% bootstrap CI of the mean via :func:`lekutils.report.stats.describe`; no CI
    below 10) plus the mean of its used answers."""
    from lekutils.report.stats import describe

    by: dict[str, list[Mapping[str, Any]]] = {}
    for r in sorted(records, key=lambda r: r.get("source", SELF) != SELF):
        by.setdefault(str(r.get("source", SELF)), []).append(r)
    out = []
    total_used = sum(bool(r.get("used", r.get("kept"))) for r in records)
    for source, recs in by.items():
        d = describe([float(r["lek_score"]) for r in recs], seed=seed)
        used = [r for r in recs if r.get("used", r.get("kept"))]
        out.append({
            "source": source, "source_model": recs[0].get("source_model"), "model": recs[0].get("model"),
            "generated": len(recs), "kept": sum(bool(r.get("kept")) for r in recs), "used": len(used),
            "used_share": round(len(used) / total_used, 4) if total_used else None,
            "n": d.n, "mean": _r(d.mean), "median": _r(d.median), "ci_low": _r(d.ci_low), "ci_high": _r(d.ci_high),
            "std": _r(d.std), "used_mean": _r(sum(float(r["lek_score"]) for r in used) / len(used)) if used else None})
    return out


def _r(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 3)
