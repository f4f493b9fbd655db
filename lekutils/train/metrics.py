"""A phase's metrics (``metrics.jsonl``) as a table and a loss figure."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lekutils.core.jsonl import read_jsonl

METRICS_FILE = "metrics.jsonl"


def metrics_frame(metrics: list[dict[str, Any]]) -> Any:
    """Metrics rows as a pandas DataFrame indexed by step."""
    import pandas as pd

    return pd.DataFrame(metrics).set_index("step").sort_index() if metrics else pd.DataFrame()


def plot_loss(metrics: list[dict[str, Any]], title: str = "") -> Any:
    """Training and validation loss against step (a matplotlib Figure in the report's theme)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from lekutils.report.figures import ONE_COLUMN, integer_ticks, set_theme

    set_theme()
    pal = sns.color_palette("colorblind")
    fig, ax = plt.subplots(figsize=(ONE_COLUMN * 1.4, 2.4))
    tr = [(r["step"], r["train_loss"]) for r in metrics if r.get("train_loss") is not None]
    va = [(r["step"], r["val_loss"]) for r in metrics if r.get("val_loss") is not None]
    if tr:
        ax.plot(*zip(*tr, strict=True), label="train", lw=1.2, color=pal[0])
    if va:
        ax.plot(*zip(*va, strict=True), "o-", label="validation", lw=1.2, ms=3, color=pal[1])
    if not tr and not va:
        ax.text(0.5, 0.5, "no loss recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step (micro-batch)")
    ax.set_ylabel("loss")
    integer_ticks(ax.xaxis)
    ax.set_title(title, loc="left")
    if tr or va:
        ax.legend()
    fig.tight_layout()
    return fig


def save_loss_figure(adapter_dir: str | os.PathLike[str], title: str = "") -> list[Path]:
    """Write ``loss.png`` and ``loss.pdf`` (see :func:`lekutils.report.figures.save_figure`) into the
    adapter folder from its metrics."""
    import matplotlib.pyplot as plt

    from lekutils.report.figures import save_figure

    adapter_dir = Path(adapter_dir)
    fig = plot_loss(read_jsonl(adapter_dir / METRICS_FILE), title)
    paths = save_figure(fig, "loss", [adapter_dir], dpi=200)
    plt.close(fig)
    return paths
