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
    """Training and validation loss against step (a matplotlib Figure)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.2))
    tr = [(r["step"], r["train_loss"]) for r in metrics if r.get("train_loss") is not None]
    va = [(r["step"], r["val_loss"]) for r in metrics if r.get("val_loss") is not None]
    if tr:
        ax.plot(*zip(*tr, strict=True), label="train", lw=1.2)
    if va:
        ax.plot(*zip(*va, strict=True), "o-", label="validation", lw=1.2)
    ax.set_xlabel("step (micro-batch)")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def save_loss_figure(adapter_dir: str | os.PathLike[str], title: str = "") -> list[Path]:
    """Write ``loss.png`` and ``loss.pdf`` into the adapter folder from its metrics."""
    import matplotlib.pyplot as plt

    adapter_dir = Path(adapter_dir)
    fig = plot_loss(read_jsonl(adapter_dir / METRICS_FILE), title)
    paths = []
    for ext in ("png", "pdf"):
        p = adapter_dir / f"loss.{ext}"
        fig.savefig(p, dpi=120)
        paths.append(p)
    plt.close(fig)
    return paths
