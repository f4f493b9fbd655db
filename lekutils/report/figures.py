"""Publication figures: one seaborn theme, one- and two-column sizes, PNG + PDF (TrueType fonts).

Each ``*_figure`` function takes a report table and returns a :class:`matplotlib.figure.Figure`;
:func:`save_figure` writes it as PNG and PDF into one or more folders.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from lekutils.scoring.rules import NEGATIVE, SIGNALS

ONE_COLUMN = 3.5  # inches: a one-column paper figure
TWO_COLUMN = 7.2  # inches: a two-column (full-width) paper figure
SCORE_LABEL = "v2 score (points)"
DELTA_LABEL = "Δ v2 score vs baseline (points)"
#: Fewer points than this: no box, only the points (a box over 2 points means nothing).
MIN_BOX_N = 10
_BASE_RC = {
    "pdf.fonttype": 42,  # embed TrueType, not Type 3
    "ps.fonttype": 42,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
    "figure.dpi": 100,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "font.size": 8,
}


def set_theme() -> None:
    """The report's one theme: seaborn ``whitegrid`` at paper scale, colour-blind palette, TrueType PDF."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", rc=_BASE_RC)


def width_of(width: str | float) -> float:
    """``"one"`` / ``"two"`` (paper columns) or a number of inches."""
    if width in ("one", "one-column"):
        return ONE_COLUMN
    if width in ("two", "two-column"):
        return TWO_COLUMN
    return float(width)


#: Environment variable naming the figure formats to write (default ``png,pdf``; e.g. ``png,pdf,svg``).
FORMATS_ENV = "LEK_FIGURE_FORMATS"
FORMATS = ("png", "pdf", "svg")


def figure_formats(formats: Sequence[str] | str | None = None) -> tuple[str, ...]:
    """The formats to save: ``formats``, else ``$LEK_FIGURE_FORMATS``, else PNG and PDF."""
    if formats is None:
        formats = os.environ.get(FORMATS_ENV) or "png,pdf"
    if isinstance(formats, str):
        formats = [f.strip().lower() for f in formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"figure formats must be among {', '.join(FORMATS)}; got {list(formats)}")
    return tuple(dict.fromkeys(formats))


def save_figure(fig: Figure, name: str, dirs: Iterable[str | os.PathLike[str]], *, dpi: int = 300,
                formats: Sequence[str] | str | None = None) -> list[Path]:
    """Write ``<dir>/<name>.<format>`` (PNG and PDF unless ``formats`` or ``$LEK_FIGURE_FORMATS``
    say otherwise, e.g. ``"png,pdf,svg"``) for every folder; return the paths.

    Files are written to a temporary name and renamed, so a reader never sees half a figure.
    PNG files carry no timestamp, so the same figure gives the same bytes in every folder.
    """
    out = []
    exts = figure_formats(formats)
    with plt.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42, "svg.hashsalt": "lekutils"}):
        for d in dirs:
            d = Path(d)
            d.mkdir(parents=True, exist_ok=True)
            for ext in exts:
                target = d / f"{name}.{ext}"
                tmp = d / f".{name}.tmp.{ext}"
                meta = {"Software": None} if ext == "png" else ({"CreationDate": None} if ext == "pdf" else
                                                                    {"Date": None})
                fig.savefig(tmp, dpi=dpi, format=ext, metadata=meta)
                os.replace(tmp, target)
                out.append(target)
    return out


def condition_palette(conditions: Sequence[str]) -> dict[str, tuple]:
    """Stable colours: baseline grey, then the colour-blind palette in order."""
    pal = sns.color_palette("colorblind", max(3, len(conditions)))
    others = [c for c in conditions if c != "baseline"]
    colours = {c: pal[i] for i, c in enumerate(others)}
    if "baseline" in conditions:
        colours["baseline"] = (0.55, 0.55, 0.55)
    return colours


def _label(model: str, probe_set: str) -> str:
    return f"{model} · {probe_set}"


def _labels(df: pd.DataFrame) -> pd.Series:
    return df["model"].astype(str) + " · " + df["probe_set"].astype(str)


def _empty(fig: Figure, ax: plt.Axes, what: str) -> Figure:
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def kernel_effect_figure(effects: pd.DataFrame, *, width: str | float = "one") -> Figure:
    """Forest plot: each model x probe set's paired kernel effect (mean Δ and 95% CI) per condition.

    Our runs and upstream's published runs are separate panels; every row label carries its n, and
    rows with fewer than 10 probes (no CI) are drawn hollow and marked "no CI".
    """
    set_theme()
    labelled = effects.copy()
    if "origin" not in labelled:
        labelled["origin"] = "ours"
    if not labelled.empty:
        no_ci = np.where(labelled["ci_low"].isna(), ", no CI", "")
        labelled["label"] = _labels(labelled) + " (n=" + labelled["n"].astype(str) + no_ci + ")"
    origins = [o for o in ("ours", "upstream") if (labelled["origin"] == o).any()]
    heights = [max(1, labelled.loc[labelled["origin"] == o, "label"].nunique()) for o in origins] or [1]
    conds = list(dict.fromkeys(effects["condition"])) if not effects.empty else []
    per_row = 0.32 * max(1, len(conds)) ** 0.5
    fig, axes = plt.subplots(len(heights), 1, figsize=(width_of(width), 0.9 + per_row * sum(heights) + 0.3 * len(heights)),
                             squeeze=False, gridspec_kw={"height_ratios": heights}, sharex=True)
    if effects.empty:
        return _empty(fig, axes[0, 0], "kernel conditions to compare")
    pal = condition_palette(conds)
    step = 0.7 / max(1, len(conds))
    for ax, origin in zip(axes[:, 0], origins, strict=True):
        part = labelled[labelled["origin"] == origin]
        rows = list(dict.fromkeys(part["label"]))
        for j, cond in enumerate(conds):
            sub = part[part["condition"] == cond]
            y = np.array([rows.index(v) for v in sub["label"]]) + (j - (len(conds) - 1) / 2) * step
            x, lo, hi = (sub[c].to_numpy(float) for c in ("delta", "ci_low", "ci_high"))
            has = np.isfinite(lo)
            ax.errorbar(x[has], y[has], xerr=np.vstack([x[has] - lo[has], hi[has] - x[has]]), fmt="o", ms=3.5,
                        lw=1.1, capsize=2, color=pal[cond], label=cond if origin == origins[0] else None)
            ax.plot(x[~has], y[~has], "o", ms=3.5, mfc="none", color=pal[cond])
        ax.axvline(0, color="black", lw=0.8, zorder=1.5)
        ax.set_yticks(range(len(rows)), rows)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_title("our runs" if origin == "ours" else "upstream (published records)", loc="left")
        ax.grid(axis="y", visible=False)
    axes[-1, 0].set_xlabel(DELTA_LABEL + "\npaired per-probe mean, 95% bootstrap CI")
    fig.legend(title="kernel", loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(conds), frameon=False)
    fig.tight_layout()
    return fig


def score_distribution_figure(df: pd.DataFrame, *, width: str | float = "two") -> Figure:
    """Box plots (with the probes as points) of the scores per model x probe set and condition; groups
    of fewer than 10 probes show their points only, and every label carries its n."""
    set_theme()
    d = df.assign(condition=df["condition"].astype(str))
    if len(d):
        n_probes = d.groupby(["model", "probe_set"], observed=True)["probe_id"].transform("nunique")
        d["label"] = _labels(d) + " (n=" + n_probes.astype(str) + ")"
    else:
        d["label"] = []
    order = list(dict.fromkeys(d["label"]))
    conds = list(dict.fromkeys(d["condition"])) if len(d) else []
    rotate = len(order) > 4
    fig, ax = plt.subplots(figsize=(width_of(width), 2.8 + (0.6 if rotate else 0)))
    if d.empty:
        return _empty(fig, ax, "scores")
    pal = condition_palette(conds)
    with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib 3.11's deprecated `vert`
        warnings.simplefilter("ignore", matplotlib.MatplotlibDeprecationWarning)
        n = d.groupby(["label", "condition"], observed=True)["score"].transform("size")
        sns.boxplot(data=d[n >= MIN_BOX_N], x="label", y="score", hue="condition", order=order, hue_order=conds,
                    palette=pal, fliersize=0, linewidth=0.7, width=0.75, ax=ax)
    sns.stripplot(data=d, x="label", y="score", hue="condition", order=order, hue_order=conds, palette=pal,
                  dodge=True, size=1.8, alpha=0.55, jitter=0.18, ax=ax, legend=False, edgecolor="none")
    ax.set_xlabel("")
    ax.set_ylabel(SCORE_LABEL)
    if rotate:
        ax.tick_params(axis="x", labelrotation=30)
        for t in ax.get_xticklabels():
            t.set_ha("right")
            t.set_rotation_mode("anchor")
    ax.legend(title="condition", loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(conds), frameon=False)
    fig.tight_layout()
    return fig


def category_heatmap_figure(categories: pd.DataFrame, *, width: str | float = "two",
                            annotate: bool | None = None) -> Figure:
    """Mean score per category (rows) and model x condition (columns); one panel per probe set."""
    set_theme()
    meta = {"model", "probe_set", "category", "probes"}
    conds = [c for c in categories.columns if c not in meta and not c.endswith("_delta")]
    sets = list(dict.fromkeys(categories["probe_set"])) if not categories.empty else []
    n_cats = [categories.loc[categories["probe_set"] == s, "category"].nunique() for s in sets]
    n_cols = [categories.loc[categories["probe_set"] == s, "model"].nunique() * len(conds) for s in sets]
    pads = [4.5 if c > 3 else 2.0 for c in n_cols]  # room for rotated column labels
    height = 0.4 + sum(0.17 * (n + p) for n, p in zip(n_cats, pads, strict=True)) if sets else 2.0
    fig, axes = plt.subplots(len(sets) or 1, 1, figsize=(width_of(width), height), squeeze=False,
                             layout="constrained", gridspec_kw={"height_ratios": [max(n, 1) for n in n_cats] or [1]})
    if categories.empty:
        return _empty(fig, axes[0, 0], "categories")
    finite = categories[conds].to_numpy(float)
    vmin, vmax = np.nanmin(finite), np.nanmax(finite)
    for ax, pset in zip(axes[:, 0], sets, strict=True):
        sub = categories[categories["probe_set"] == pset]
        long = sub.melt(id_vars=["model", "category", "probes"], value_vars=conds, var_name="condition",
                        value_name="mean").dropna(subset=["mean"])
        long["column"] = long["model"].astype(str) + " · " + long["condition"]
        present = set(long["column"])
        cols = [f"{m} · {c}" for m in dict.fromkeys(long["model"].astype(str)) for c in conds
                if f"{m} · {c}" in present]
        long["row"] = long["category"] + " (" + long["probes"].astype(int).astype(str) + ")"
        mat = long.pivot_table(index="row", columns="column", values="mean", aggfunc="first")[cols]
        show = annotate if annotate is not None else mat.size <= 400
        sns.heatmap(mat, ax=ax, cmap="viridis", vmin=vmin, vmax=vmax, annot=show, fmt=".1f",
                    annot_kws={"fontsize": 5.5}, linewidths=0.3, linecolor="white", cbar=False)
        owners = [c.split(" · ")[0] for c in cols]
        for k in range(1, len(owners)):
            if owners[k] != owners[k - 1]:  # separate the models
                ax.axvline(k, color="white", lw=2.5)
        ax.set_title(f"probe set {pset}: mean per category (probes)", loc="left")
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(axis="y", labelsize=6)
        ax.tick_params(axis="x", labelsize=6, labelrotation=30 if len(cols) > 3 else 0)
        for t in ax.get_xticklabels():
            t.set_ha("right" if len(cols) > 3 else "center")
            t.set_rotation_mode("anchor")
    # one colour bar for all panels (they share vmin/vmax)
    fig.colorbar(axes[0, 0].collections[0], ax=list(axes[:, 0]), label=SCORE_LABEL, shrink=min(0.6, 6 / height),
                 pad=0.01, aspect=30)
    return fig


def signal_decomposition_figure(decomposition: pd.DataFrame, *, width: str | float = "two") -> Figure:
    """Stacked bars of each signal's mean weighted contribution (points) per model x condition.

    Bonuses stack to the right of zero, penalties to the left; the black dot is their sum (the mean score).
    """
    set_theme()
    d = decomposition.assign(label=_labels(decomposition) + " · " + decomposition["condition"].astype(str))
    rows = list(dict.fromkeys(d["label"]))
    fig_h = 1.3 + 0.22 * max(1, len(rows))
    fig, ax = plt.subplots(figsize=(width_of(width), fig_h))
    if d.empty:
        return _empty(fig, ax, "signals")
    signals = list(SIGNALS)
    pal, marks = signal_styles(signals)
    mat = d.pivot_table(index="label", columns="signal", values="points", aggfunc="first").reindex(rows)
    mat = mat.reindex(columns=signals).fillna(0.0)
    y = np.arange(len(rows))
    pos_left = np.zeros(len(rows))
    neg_left = np.zeros(len(rows))
    used = []
    for s in signals:
        v = mat[s].to_numpy(float)
        if not np.any(np.abs(v) > 1e-9):
            continue
        used.append(s)
        pos = np.where(v > 0, v, 0.0)
        neg = np.where(v < 0, v, 0.0)
        ax.barh(y, pos, left=pos_left, color=pal[s], height=0.72, edgecolor="white", linewidth=0.3, hatch=marks[s])
        ax.barh(y, neg, left=neg_left, color=pal[s], height=0.72, edgecolor="white", linewidth=0.3, hatch=marks[s])
        pos_left += pos
        neg_left += neg
    ax.plot(mat.sum(axis=1).to_numpy(), y, "o", color="black", ms=2.5, label="mean score")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, rows)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("mean contribution to the v2 score (points)")
    ax.grid(axis="y", visible=False)
    handles = [Patch(facecolor=pal[s], edgecolor="white", hatch=marks[s], label=s.replace("_", " "))
               for s in used] + [Line2D([], [], marker="o", ls="", color="black", ms=3, label="sum = mean score")]
    legend_rows = math.ceil(len(handles) / 5)
    legend_h = 0.16 * legend_rows + 0.1
    fig.set_size_inches(fig.get_size_inches()[0], fig_h + legend_h)
    fig.legend(handles=handles, loc="lower center", ncol=5, frameon=False, fontsize=6.5)
    fig.tight_layout(rect=(0, legend_h / (fig_h + legend_h), 1, 1))
    return fig


def signal_styles(signals: Sequence[str]) -> tuple[dict[str, tuple], dict[str, str | None]]:
    """Colour and hatch per v2 signal, colour-blind safe: the 10-colour ``colorblind`` palette, and
    the signals past the tenth told apart by a dotted hatch; penalties hatched ``///``."""
    base = sns.color_palette("colorblind", 10)
    colours = {s: base[i % len(base)] for i, s in enumerate(signals)}
    hatches = {s: ("///" if s in NEGATIVE else ("...." if i >= len(base) else None)) for i, s in enumerate(signals)}
    return colours, hatches


def integer_ticks(axis: Any) -> None:
    """Whole-number ticks on an axis of counts (no 0.5 of an answer)."""
    axis.set_major_locator(MaxNLocator(integer=True))


def _unit(gate: str) -> str:
    g = gate.lower()
    if "degen" in g or "count" in g:
        return "count"
    if "kernel" in g or "delta" in g or "response" in g:
        return "Δ v2 score (points)"
    return SCORE_LABEL


def phase_progression_figure(gates: pd.DataFrame, *, width: str | float = "two") -> Figure:
    """One panel per gate: its value after each phase (green passed, red failed), level dashed."""
    set_theme()
    names = list(dict.fromkeys(gates["gate"])) if not gates.empty else []
    ncols = min(3, max(1, len(names)))
    nrows = max(1, math.ceil(len(names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(width_of(width), 0.4 + 1.9 * nrows), squeeze=False)
    if gates.empty:
        return _empty(fig, axes[0, 0], "gate tables (no training phase has run)")
    ok, bad = sns.color_palette("colorblind")[2], sns.color_palette("colorblind")[3]
    for ax, name in zip(axes.flat, names, strict=False):
        g = gates[gates["gate"] == name].sort_values("phase")
        x = g["phase"].to_numpy(float)
        ax.plot(x, g["value"], color="0.35", lw=1, zorder=1)
        colours = [ok if p else bad for p in g["passed"].fillna(False)]
        ax.scatter(x, g["value"], c=colours, s=18, zorder=2, edgecolor="black", linewidth=0.3)
        if g["level"].notna().any():
            ax.step(x, g["level"], where="mid", ls="--", color="0.1", lw=1.0, zorder=1.5)
        ax.set_title(name.replace("_", " "), loc="left")
        ax.set_xlabel("phase")
        ax.set_ylabel(_unit(name))
        ax.set_xticks(sorted(set(x.astype(int))))
        if _unit(name) == "count":
            integer_ticks(ax.yaxis)
    for ax in list(axes.flat)[len(names):]:
        ax.set_axis_off()
    handles = [Line2D([], [], marker="o", ls="", color=ok, label="passed"),
               Line2D([], [], marker="o", ls="", color=bad, label="failed"),
               Line2D([], [], ls="--", color="black", label="gate level")]
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    fig.tight_layout()
    return fig


def _ci_points(ax: plt.Axes, sub: pd.DataFrame, order: list[str], shift: float, cols: tuple[str, str, str],
               colour: tuple, label: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Points at each stage's position with CI bars; points without a CI (n < 10) drawn hollow."""
    x = np.array([order.index(s) for s in sub["stage"]]) + shift
    y, lo, hi = (sub[c].to_numpy(float) for c in cols)
    has = np.isfinite(lo)
    ax.errorbar(x[has], y[has], yerr=np.vstack([y[has] - lo[has], hi[has] - y[has]]), fmt="o", ms=3.5, lw=1.1,
                capsize=2, color=colour, label=label)
    ax.plot(x[~has], y[~has], "o", ms=3.5, mfc="none", color=colour)
    return x, y


def headline_figure(stages: pd.DataFrame, *, width: str | float = "two") -> Figure:
    """The study's headline: (a) mean v2 per stage and condition with 95% CIs; (b) each stage's
    paired change against the base model. n is in the titles; a stage with n < 10 has no CI and
    is drawn hollow."""
    set_theme()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(width_of(width), 2.6), gridspec_kw={"width_ratios": [3, 2]})
    if stages.empty:
        return _empty(fig, ax, "study results (base model and adapters)")
    order = list(dict.fromkeys(stages["stage"]))
    conds = list(dict.fromkeys(stages["condition"]))
    pal = condition_palette(conds)
    step = 0.6 / max(1, len(conds))
    tuned = stages[stages["stage"] != "base"]
    for j, cond in enumerate(conds):
        shift = (j - (len(conds) - 1) / 2) * step
        x, y = _ci_points(ax, stages[stages["condition"] == cond], order, shift, ("mean", "ci_low", "ci_high"),
                          pal[cond], cond)
        ax.plot(x, y, lw=0.6, color=pal[cond], alpha=0.5)
        _ci_points(bx, tuned[tuned["condition"] == cond], order, shift,
                   ("delta_vs_base", "delta_ci_low", "delta_ci_high"), pal[cond])
    lo_n, hi_n = int(stages["n"].min()), int(stages["n"].max())
    n = f"{lo_n}" if lo_n == hi_n else f"{lo_n}–{hi_n}"
    ax.set_xticks(range(len(order)), order)
    ax.set_ylabel(SCORE_LABEL)
    ax.set_title(f"(a) mean v2 on held-out probes, 95% CI (n = {n})", loc="left")
    ax.legend(title="condition", loc="lower center", bbox_to_anchor=(0.5, 1.1), ncol=len(conds), frameon=False)
    bx.axhline(0, color="black", lw=0.8)
    bx.set_xticks(range(1, len(order)), order[1:])
    bx.set_xlim(0.5, len(order) - 0.5)
    bx.set_ylabel("Δ v2 vs base model (points)")
    bx.set_title("(b) paired change vs base, 95% CI", loc="left")
    fig.tight_layout()
    return fig


def prompt_length_figure(lengths: pd.DataFrame, *, width: str | float = "two") -> Figure:
    """Prompt length (characters) per probe set: a box (n >= 10) and the jittered points, n in the labels.

    ``lengths`` has columns ``set`` and ``chars`` (one row per prompt), as notebook 00 builds it.
    """
    set_theme()
    groups = [(name, part["chars"].to_numpy()) for name, part in lengths.groupby("set", sort=False)]
    fig, ax = plt.subplots(figsize=(width_of(width), 0.35 * max(1, len(groups)) + 0.9))
    if not groups:
        return _empty(fig, ax, "probe sets")
    pal = sns.color_palette("colorblind", len(groups))
    for i, (_, g) in enumerate(groups, start=1):
        if len(g) >= MIN_BOX_N:
            ax.boxplot([g], positions=[i], orientation="horizontal", widths=0.6, showfliers=False,
                       medianprops={"color": "black"})
        jitter = (np.random.default_rng(i).random(len(g)) - 0.5) * 0.35
        ax.scatter(g, i + jitter, s=4, alpha=0.5, color=pal[i - 1])
    ax.set_yticks(range(1, len(groups) + 1), [f"{n} (n={len(g)})" for n, g in groups])
    ax.set_ylim(len(groups) + 0.6, 0.4)
    ax.set_xlabel("prompt length (characters)")
    fig.tight_layout()
    return fig


def ab_delta_figure(deltas: pd.DataFrame, *, title: str = "", band: float = 0.5,
                    width: str | float = "two") -> Figure:
    """Per-probe score change against baseline for each kernel condition (rows: probe ids, in order;
    columns: conditions), with the ±``band`` "unchanged" lines."""
    set_theme()
    fig, ax = plt.subplots(figsize=(width_of(width), 0.16 * max(1, len(deltas)) + 1.1))
    if deltas.empty:
        return _empty(fig, ax, "kernel conditions")
    pal = condition_palette(list(deltas.columns))
    deltas.plot.barh(ax=ax, width=0.8, color=[pal[c] for c in deltas.columns])
    ax.axvline(0, color="black", lw=0.8)
    for x in (-band, band):
        ax.axvline(x, color="grey", lw=0.6, ls=":")
    ax.invert_yaxis()
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, title="condition")
    ax.set_xlabel(DELTA_LABEL)
    ax.set_ylabel("")
    ax.set_title(f"{title} (n={len(deltas)} probes)" if title else f"n={len(deltas)} probes", loc="left")
    ax.tick_params(axis="y", labelsize=5.5)
    ax.grid(axis="y", visible=False)
    fig.tight_layout()
    return fig
