"""Scores per source of each distillation phase: self-distilled answers beside reference models' answers.

:func:`distill_sources_table` reads every ``<run_dir>/distill/phaseK/raw.jsonl`` (all generations,
kept or not) and gives one row per (phase, source) -- ``self`` or a reference model's spec
(:mod:`lekutils.tasks.augment`) -- with the generated / kept / used counts, the source's share of the
phase's training set and its score distribution (n, mean with a seeded bootstrap 95% CI via
:func:`lekutils.report.stats.describe`, median; no CI below 10 answers). Files written before the
augmentation existed have no ``source``: their answers count as ``self``.
:func:`distill_sources_figure` draws the means with their CIs per phase, one colour per source.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

COLUMNS = ["phase", "source", "label", "source_model", "generated", "kept", "used", "used_share", "n", "mean",
           "ci_low", "ci_high", "median", "std", "used_mean"]


def _label(row: dict[str, Any]) -> str:
    """``self`` or the reference's model id (its spec where no id was recorded)."""
    return "self" if row["source"] == "self" else f"reference: {row.get('source_model') or row['source']}"


def distill_sources_table(run_dir: str | os.PathLike[str], *, seed: int = 0) -> pd.DataFrame:
    """One row per (phase, source) of the distilled phases of ``run_dir`` (see the module docstring);
    phases not distilled yet are left out."""
    from lekutils.tasks.augment import source_stats
    from lekutils.tasks.distill import generation_records

    rows = []
    for raw in sorted(Path(run_dir).glob("distill/phase*/raw.jsonl"), key=lambda p: int(p.parent.name[5:] or 0)):
        if not raw.parent.name[5:].isdigit():
            continue
        records = generation_records(raw)
        if not records:
            continue
        for row in source_stats(records, seed=seed):
            rows.append({"phase": int(raw.parent.name[5:]), **row, "label": _label(row)})
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    for c in ("phase", "generated", "kept", "used", "n"):
        df[c] = df[c].astype("Int64")
    return df


def distill_sources_figure(table: pd.DataFrame, *, width: str | float = "one") -> Figure:
    """Mean v2 score of each source's answers per phase with 95% CIs (hollow: n < 10, no CI)."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    from lekutils.report.figures import SCORE_LABEL, _empty, set_theme, width_of

    set_theme()
    fig, ax = plt.subplots(figsize=(width_of(width), 2.4))
    if table.empty:
        return _empty(fig, ax, "distillation records")
    labels = list(dict.fromkeys(table["label"]))
    pal = sns.color_palette("colorblind", max(3, len(labels)))
    phases = sorted(int(p) for p in table["phase"].unique())
    step = 0.5 / max(1, len(labels))
    for j, label in enumerate(labels):
        sub = table[table["label"] == label]
        x = np.array([phases.index(int(p)) for p in sub["phase"]]) + (j - (len(labels) - 1) / 2) * step
        y, lo, hi = (sub[c].to_numpy(float) for c in ("mean", "ci_low", "ci_high"))
        has = np.isfinite(lo)
        ax.errorbar(x[has], y[has], yerr=np.vstack([y[has] - lo[has], hi[has] - y[has]]), fmt="o", ms=3.5,
                    lw=1.1, capsize=2, color=pal[j], label=label)
        ax.plot(x[~has], y[~has], "o", ms=3.5, mfc="none", color=pal[j], label=None if has.any() else label)
    ax.set_xticks(range(len(phases)), [f"phase {p}" for p in phases])
    ax.set_xlim(-0.5, len(phases) - 0.5)
    ax.set_ylabel(SCORE_LABEL)
    ax.set_title("distilled answers by source: mean, 95% CI", loc="left")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.12), ncol=min(2, len(labels)), frameon=False)
    fig.tight_layout()
    return fig


def write_distill_sources(run_dir: str | os.PathLike[str], figure_dirs: Iterable[str | os.PathLike[str]] = (), *,
                          seed: int = 0, dpi: int = 300) -> tuple[pd.DataFrame, Figure]:
    """The table (also ``<run_dir>/tables/distill_sources.csv``) and the figure (``distill_sources``
    PNG + PDF in ``<run_dir>/figures`` and each of ``figure_dirs``)."""
    from lekutils.core.jsonl import atomic_write_text
    from lekutils.report.figures import save_figure

    df = distill_sources_table(run_dir, seed=seed)
    atomic_write_text(Path(run_dir) / "tables" / "distill_sources.csv", df.to_csv(index=False))
    fig = distill_sources_figure(df)
    save_figure(fig, "distill_sources", [Path(run_dir) / "figures", *figure_dirs], dpi=dpi)
    return df, fig
