"""Figures: sizes, labels with units, PNG + PDF with embedded TrueType fonts, empty inputs."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.figure import Figure
from test_report_tables import _toy_df

from lekutils.report import figures as F
from lekutils.report.build import report_figures, report_tables, write_report


@pytest.fixture(scope="module")
def toy() -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    df = _toy_df()
    gates = pd.DataFrame([
        {"phase": p, "phase_name": f"phase{p}", "gate": g, "value": v + p, "level": lv, "passed": v + p >= lv,
         "op": ">=", "source": "x"}
        for p in range(3) for g, v, lv in (("average", 10.0, 11.0), ("degeneration", 0.0, 0.0))])
    return df, report_tables(df, gates, n_boot=200)


def test_figures_sizes_and_axis_labels(toy: tuple[pd.DataFrame, dict[str, pd.DataFrame]]) -> None:
    df, tabs = toy
    figs = report_figures(df, tabs)
    assert set(figs) == {"kernel_effect", "score_distributions", "category_heatmap", "signal_decomposition",
                         "phase_progression"}
    assert all(isinstance(f, Figure) for f in figs.values())
    assert figs["kernel_effect"].get_size_inches()[0] == pytest.approx(F.ONE_COLUMN)
    for name in ("score_distributions", "category_heatmap", "signal_decomposition", "phase_progression"):
        assert figs[name].get_size_inches()[0] == pytest.approx(F.TWO_COLUMN), name
    assert "points" in figs["kernel_effect"].axes[0].get_xlabel()
    assert "points" in figs["score_distributions"].axes[0].get_ylabel()
    assert "points" in figs["signal_decomposition"].axes[0].get_xlabel()
    prog_axes = [a for a in figs["phase_progression"].axes if a.get_visible() and a.axison]
    assert {a.get_xlabel() for a in prog_axes} == {"phase"}
    assert {a.get_ylabel() for a in prog_axes} == {F.SCORE_LABEL, "count"}
    # the gate level is drawn: a dashed line per panel
    assert all(any(line.get_linestyle() == "--" for line in a.get_lines()) for a in prog_axes)
    plt.close("all")


def test_save_writes_png_and_truetype_pdf(tmp_path: Path, toy: tuple[pd.DataFrame, dict[str, pd.DataFrame]]) -> None:
    df, tabs = toy
    written = write_report(tabs, report_figures(df, tabs), tmp_path / "run", [tmp_path / "top"], dpi=72, close=True)
    for d in (tmp_path / "run" / "figures", tmp_path / "top"):
        for name in ("kernel_effect", "phase_progression"):
            png, pdf = d / f"{name}.png", d / f"{name}.pdf"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            data = pdf.read_bytes()
            assert data[:5] == b"%PDF-"
            assert b"/FontFile2" in data and b"/Type3" not in data  # TrueType embedded (fonttype 42)
    assert len(written["figures"]) == 5 * 2 * 2
    assert (tmp_path / "run" / "tables" / "summary.csv").is_file()
    assert not list((tmp_path / "top").glob(".*"))


def test_empty_inputs_still_give_a_figure() -> None:
    empty_gates = pd.DataFrame(columns=["phase", "phase_name", "gate", "value", "level", "passed"])
    fig = F.phase_progression_figure(empty_gates)
    assert "no gate tables" in fig.axes[0].texts[0].get_text()
    eff = pd.DataFrame(columns=["model", "probe_set", "condition", "delta", "ci_low", "ci_high"])
    assert isinstance(F.kernel_effect_figure(eff), Figure)
    plt.close("all")
