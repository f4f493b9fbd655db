"""Reward-hacking audit of self-distillation selections.

The v2 score is a sum of capped regex counts, so selecting on it can reward length and keyword
stuffing. These helpers decompose each score into per-signal contributions (weights and caps of
``../shared/specs/v2-scorer.md``), show which signals sit at their caps, measure keyword density,
and flag examples whose score comes mostly from one signal. All functions return DataFrames or
matplotlib Figures; nothing is printed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from lekutils.scoring.rules import KEYWORD_SIGNALS, POSITIVE, at_cap, contributions


def audit_frame(records: Iterable[Mapping[str, Any]], *, scorer: str | None = None,
                dominance: float = 0.5) -> pd.DataFrame:
    """One row per generation record: kept, score, length, contributions, caps, density, dominance.

    ``records`` are distillation records (``signals``, ``lek_score``, ``response``, ``kept``);
    ``scorer`` defaults to each record's own ``scorer`` field. ``dominant_share`` is the largest
    positive contribution over all positive contributions; ``flag_single_signal`` marks rows where
    it is at least ``dominance``.
    """
    rows = []
    for rec in records:
        sig = rec.get("signals") or {}
        sc = scorer or rec.get("scorer") or "v2"
        contrib = contributions(sig, sc)
        caps = at_cap(sig, sc)
        text = rec.get("response", "")
        words = len(text.split())
        pos = {k: contrib[k] for k in POSITIVE}
        pos_total = sum(pos.values())
        dom_signal = max(pos, key=lambda k: pos[k]) if pos_total > 0 else None
        share = pos[dom_signal] / pos_total if dom_signal else 0.0
        kw = sum(float(sig.get(k, 0) or 0) for k in KEYWORD_SIGNALS)
        row = {"prompt_id": rec.get("prompt_id"), "sample_idx": rec.get("sample_idx"),
               "kept": bool(rec.get("kept")), "lek_score": rec.get("lek_score"), "chars": len(text),
               "words": words, "keyword_hits": kw, "keyword_density": (100.0 * kw / words) if words else 0.0,
               "caps_hit": sum(caps.values()), "dominant_signal": dom_signal, "dominant_share": round(share, 3),
               "flag_single_signal": share >= dominance}
        row.update({f"c_{k}": v for k, v in contrib.items()})
        row.update({f"cap_{k}": v for k, v in caps.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _group(kept: pd.Series) -> pd.Series:
    return kept.map({True: "kept", False: "rejected"})


def cap_rates(frame: pd.DataFrame) -> pd.DataFrame:
    """Share of kept and of rejected generations whose signal sits at its cap (rows: signals)."""
    if frame.empty:
        return pd.DataFrame(columns=["signal", "kept", "rejected"])
    cols = [f"cap_{k}" for k in POSITIVE]
    g = frame[cols].astype(float).groupby(_group(frame["kept"])).mean().T
    g.index = [c.removeprefix("cap_") for c in g.index]
    for side in ("kept", "rejected"):
        if side not in g:
            g[side] = float("nan")
    return g[["kept", "rejected"]].rename_axis("signal").reset_index()


def kept_vs_rejected(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean score, length, keyword density, caps hit and flagged share for kept vs rejected."""
    if frame.empty:
        return pd.DataFrame()
    agg = frame.assign(group=_group(frame["kept"])).groupby("group").agg(
        n=("lek_score", "size"), mean_score=("lek_score", "mean"), mean_words=("words", "mean"),
        mean_keyword_density=("keyword_density", "mean"), mean_caps_hit=("caps_hit", "mean"),
        flagged_share=("flag_single_signal", "mean"))
    return agg.round(3).reset_index()


def score_length_correlation(frame: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation of score with word count, overall and per group."""
    rows = []
    for name, part in [("all", frame)] + [(g, frame[_group(frame["kept"]) == g]) for g in ("kept", "rejected")]:
        rho = part["lek_score"].corr(part["words"], method="spearman") if len(part) >= 3 else float("nan")
        rows.append({"group": name, "n": len(part), "spearman_score_words": rho})
    return pd.DataFrame(rows)


def flagged(frame: pd.DataFrame) -> pd.DataFrame:
    """The kept examples whose positive score comes mostly from one signal."""
    if frame.empty:
        return frame
    cols = ["prompt_id", "sample_idx", "lek_score", "words", "dominant_signal", "dominant_share"]
    return frame[frame["kept"] & frame["flag_single_signal"]][cols].sort_values("dominant_share", ascending=False)


def plot_audit(frame: pd.DataFrame, threshold: float | None = None):
    """Three panels: score vs length, cap rates, keyword density; kept vs rejected. Returns a Figure
    in the report's theme (colour-blind palette; whole-number count axes; a panel with nothing to
    show says so instead of staying empty)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from lekutils.report.figures import TWO_COLUMN, integer_ticks, set_theme

    set_theme()
    pal = sns.color_palette("colorblind")
    fig, axes = plt.subplots(1, 3, figsize=(TWO_COLUMN, 2.6))
    colors = {"kept": pal[2], "rejected": (0.55, 0.55, 0.55)}
    rates = cap_rates(frame).set_index("signal") if not frame.empty else pd.DataFrame()
    if not frame.empty:
        grp = _group(frame["kept"])
        for name, color in colors.items():
            part = frame[grp == name]
            if part.empty:
                continue
            label = f"{name} (n={len(part)})"
            axes[0].scatter(part["words"], part["lek_score"], s=8, alpha=0.7, color=color, label=label)
            axes[2].hist(part["keyword_density"], bins=15, alpha=0.6, color=color, label=label)
    capped = rates[(rates.fillna(0) > 0).any(axis=1)] if not rates.empty else rates
    if capped.empty:
        axes[1].text(0.5, 0.5, "no signal reached its cap", ha="center", va="center", transform=axes[1].transAxes)
        axes[1].set_xticks([])
        axes[1].set_yticks([])
    else:
        capped.plot.barh(ax=axes[1], color=[colors["kept"], colors["rejected"]][: capped.shape[1]])
    if threshold is not None:
        axes[0].axhline(threshold, ls="--", color=pal[3], lw=1, label="threshold")
    axes[0].set(xlabel="words", ylabel="v2 score (points)", title="score vs length")
    axes[1].set(xlabel="share at cap", title="signals at their cap")
    axes[2].set(xlabel="keyword hits per 100 words", ylabel="generations", title="keyword density")
    integer_ticks(axes[2].yaxis)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    return fig
