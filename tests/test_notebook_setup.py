"""Notebooks behave the same wherever they are opened: workbook root, inline figures, kernel spec;
figures in one theme, saved in the formats asked for."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from lekutils.notebook import workbook_root  # noqa: E402
from lekutils.report import audit  # noqa: E402
from lekutils.report.figures import figure_formats, save_figure, signal_styles  # noqa: E402
from lekutils.runner.execute import KERNELSPEC_NAME, install_kernelspec  # noqa: E402
from lekutils.scoring.rules import NEGATIVE, SIGNALS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_workbook_root_from_any_folder_inside_it(tmp_path, monkeypatch):
    for start in (ROOT, ROOT / "notebooks", ROOT / "lekutils" / "report"):
        assert workbook_root(start) == ROOT
    run_copy = ROOT / "runs" / "some-profile" / "notebooks"  # executed copies sit under runs/
    assert workbook_root(run_copy) == ROOT
    monkeypatch.setenv("LEK_WORKBOOK_ROOT", str(tmp_path))
    assert workbook_root(tmp_path / "elsewhere") == tmp_path.resolve()


def test_every_notebook_declares_the_workbook_kernel_and_calls_setup_first():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        assert nb.metadata["kernelspec"]["name"] == KERNELSPEC_NAME, path.name
        cells = nb.cells
        p = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
        first = next(c for c in cells[p + 1:] if c.cell_type == "code")
        assert first.source.startswith("from lekutils.notebook import setup\n\nsetup()"), path.name


def test_kernel_spec_shows_figures_and_keeps_the_kernel_quiet(tmp_path):
    spec = json.loads((install_kernelspec("lek-test", prefix=str(tmp_path)) / "kernel.json").read_text())
    assert "MPLBACKEND" not in spec["env"]
    assert "--log-level=CRITICAL" in spec["argv"]


@pytest.mark.model
def test_papermill_from_another_folder_shows_the_figure_inline(tmp_path, monkeypatch):
    import papermill as pm

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNELSPEC_NAME, "display_name": "LEK workbook", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(
        "from lekutils.notebook import setup\nimport os\nroot = setup()\nprint(os.getcwd())\n"
        "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2])")]
    src, out = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, str(src))
    monkeypatch.setenv("MPLBACKEND", "Agg")  # what the old kernel spec set: must not hide the figure
    monkeypatch.chdir(tmp_path)
    install_kernelspec()
    pm.execute_notebook(str(src), str(out), cwd=str(tmp_path), progress_bar=False, kernel_name=KERNELSPEC_NAME)
    outputs = nbformat.read(str(out), as_version=4).cells[0].outputs
    assert any(o.get("text", "").strip() == str(ROOT) for o in outputs if o.output_type == "stream")
    assert any("image/png" in o.get("data", {}) for o in outputs)


def test_figure_formats_default_env_and_bad(monkeypatch, tmp_path):
    assert figure_formats() == ("png", "pdf")
    monkeypatch.setenv("LEK_FIGURE_FORMATS", "png,pdf,svg")
    assert figure_formats() == ("png", "pdf", "svg")
    with pytest.raises(ValueError, match="figure formats"):
        figure_formats("png,tiff")
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    paths = save_figure(fig, "f", [tmp_path / "a", tmp_path / "b"], dpi=50)
    assert sorted(p.name for p in paths) == ["f.pdf", "f.pdf", "f.png", "f.png", "f.svg", "f.svg"]
    for ext in ("png", "pdf", "svg"):  # no timestamps: the same figure is the same file in every folder
        assert (tmp_path / "a" / f"f.{ext}").read_bytes() == (tmp_path / "b" / f"f.{ext}").read_bytes()
    plt.close(fig)


def test_signal_styles_are_colour_blind_palette_with_hatches_past_ten():
    colours, hatches = signal_styles(list(SIGNALS))
    import seaborn as sns

    cb = set(sns.color_palette("colorblind", 10))
    assert set(colours.values()) <= cb
    styles = {(colours[s], hatches[s]) for s in SIGNALS}
    assert len(styles) == len(SIGNALS)  # every signal told apart by colour or hatch
    assert all(hatches[s] == "///" for s in SIGNALS if s in NEGATIVE)


def test_audit_panel_without_capped_signals_says_so():
    rows = []
    for i in range(4):
        row = {"kept": i % 2 == 0, "lek_score": float(i), "words": 10 + i, "keyword_density": 0.5 * i}
        row.update({f"cap_{s}": False for s in audit.POSITIVE})
        rows.append(row)
    fig = audit.plot_audit(pd.DataFrame(rows), threshold=1.0)
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert texts == ["no signal reached its cap"]
    ticks = fig.axes[2].get_yticks()
    assert all(float(t).is_integer() for t in ticks)
    plt.close(fig)


def test_lek_exec_runs_a_command_on_openblas(tmp_path):
    import subprocess
    import sys

    from lekutils.core.blas import find_openblas

    code = "import os; print(os.environ.get('LD_PRELOAD', ''))"
    proc = subprocess.run([sys.executable, "-m", "lekutils", "exec", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LD_PRELOAD": ""})
    assert proc.returncode == 0, proc.stderr
    lib = find_openblas()
    if lib is not None:
        assert str(lib) in proc.stdout


def test_a_plain_script_that_imports_lekutils_runs_on_openblas_or_is_told_how(tmp_path):
    import subprocess
    import sys

    from lekutils.core.blas import find_openblas

    if sys.platform != "linux" or find_openblas() is None:
        pytest.skip("no OpenBLAS to preload on this machine")
    script = tmp_path / "analysis.py"
    script.write_text("import lekutils\nfrom lekutils.core.blas import active_blas\nprint(active_blas())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "LEKUTILS_BLAS_REEXEC")}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("openblas:")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**env, "LEKUTILS_AUTO_BLAS": "0"})
    assert proc.stdout.strip() == "reference"
    assert "lek exec python your_script.py" in proc.stderr
