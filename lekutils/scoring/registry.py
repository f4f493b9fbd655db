"""Named scorers: ``v2`` (canonical, the benchmark scorer) and ``v2_distill`` (upstream's distillation variant)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lekutils.scoring import v2, v2_distill
from lekutils.scoring.v2 import SIGNALS

KEYS: tuple[str, ...] = (*SIGNALS, "lek_score")


@dataclass(frozen=True)
class Scorer:
    """A named, versioned scorer: ``scorer(text) -> dict`` with the 14 signals and ``lek_score``."""

    name: str
    version: str
    description: str
    func: Callable[[str], dict[str, Any]]

    def __call__(self, text: str) -> dict[str, Any]:
        return self.func(text)

    @property
    def signals(self) -> tuple[str, ...]:
        return SIGNALS


_REGISTRY: dict[str, Scorer] = {
    s.name: s for s in (
        Scorer(v2.NAME, v2.VERSION, "canonical v2: upstream's benchmark scorer (all published figures)",
               v2.score_v2),
        Scorer(v2_distill.NAME, v2_distill.VERSION,
               "upstream's self-distillation variant (training-data selection), not the benchmark v2",
               v2_distill.score_v2_distill),
    )
}


def available_scorers() -> list[str]:
    """Names of the registered scorers, canonical first."""
    return list(_REGISTRY)


def get_scorer(name: str | Scorer = "v2") -> Scorer:
    """The scorer registered under ``name`` (a :class:`Scorer` is returned as is)."""
    if isinstance(name, Scorer):
        return name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown scorer {name!r}; available: {', '.join(_REGISTRY)}") from None


def score(text: str, scorer: str | Scorer = "v2") -> dict[str, Any]:
    """Score one text: a dict of the 14 signals (accumulation order) and ``lek_score``."""
    return get_scorer(scorer)(text)


def is_v2_heuristic(heuristic: Mapping[str, Any] | None) -> bool:
    """True when a stored ``heuristic`` dict carries all 14 v2 signal keys (v1 dicts lack most)."""
    return isinstance(heuristic, Mapping) and all(k in heuristic for k in SIGNALS)


def mean_score(values: Iterable[float]) -> float:
    """A condition's mean as upstream publishes it: ``round(sum(values) / len(values), 2)``.

    The sum runs left to right in record order; other summation orders (``pandas.Series.mean``,
    ``math.fsum``) change some published figures in the last digit (Gemma3-12B P20 baseline:
    19.73 published, 19.74 with pandas). NaN for no values.
    """
    vals = [float(v) for v in values]
    return round(sum(vals) / len(vals), 2) if vals else float("nan")
