"""The whole report in three calls: tables from the long table, figures from the tables, files on disk."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from lekutils.report import figures as F
from lekutils.report import tables as T
from lekutils.scoring.rules import CHANGE_BAND

GATE_COLUMNS = ["phase", "phase_name", "gate", "value", "level", "passed", "op", "source"]


def report_tables(
    df: pd.DataFrame, gates: pd.DataFrame | None = None, *, n_boot: int = 10_000, seed: int = 0,
    band: float = CHANGE_BAND, extremes: int = 5,
) -> dict[str, pd.DataFrame]:
    """Every report table, by the CSV name it is written under (``summary`` is the main one)."""
    gates = gates if gates is not None else pd.DataFrame(columns=GATE_COLUMNS)
    summary = T.summary_table(df, n_boot=n_boot, seed=seed)
    lineage = T.lineage_table(df, summary)
    return {
        "summary": summary,
        "kernel_effect": T.kernel_effect(df, n_boot=n_boot, seed=seed, band=band),
        "conditions_wide": T.wide_table(summary),
        "v1_v2": T.v1_v2_table(summary),
        "category_means": T.category_means(df),
        "extreme_probes": T.extreme_probes(df, k=extremes),
        "degeneration": T.degeneration_table(df),
        "degeneration_crosstab": T.degeneration_crosstab(df).rename_axis("degeneration").reset_index(),
        "lineage": lineage,
        "family_trajectory": T.family_trajectory(lineage),
        "finetune_effect": T.finetune_effect(df, n_boot=n_boot, seed=seed, band=band),
        "signal_decomposition": T.signal_decomposition(df),
        "gates": gates,
        "curriculum_progress": T.curriculum_progress(gates),
        "failed_gates": T.failed_gates(gates),
    }


def report_figures(df: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> dict[str, Figure]:
    """The publication figures, by file name."""
    return {
        "kernel_effect": F.kernel_effect_figure(tables["kernel_effect"]),
        "score_distributions": F.score_distribution_figure(df),
        "category_heatmap": F.category_heatmap_figure(tables["category_means"]),
        "signal_decomposition": F.signal_decomposition_figure(tables["signal_decomposition"]),
        "phase_progression": F.phase_progression_figure(tables["gates"]),
    }


def write_report(
    tables: dict[str, pd.DataFrame], figures: dict[str, Figure], run_dir: str | os.PathLike[str],
    figure_dirs: Iterable[str | os.PathLike[str]] = ("figures",), *, dpi: int = 300, close: bool = False,
) -> dict[str, list[Path]]:
    """CSV tables into ``<run_dir>/tables``; PNG + PDF figures into ``<run_dir>/figures`` and ``figure_dirs``."""
    run_dir = Path(run_dir)
    written: dict[str, list[Path]] = {"tables": list(T.write_tables(tables, run_dir / "tables").values())}
    dirs = [run_dir / "figures", *[Path(d) for d in figure_dirs]]
    written["figures"] = []
    for name, fig in figures.items():
        written["figures"] += F.save_figure(fig, name, dirs, dpi=dpi)
        if close:
            plt.close(fig)
    return written
