"""``python -m lekutils export``: the executed report as one self-contained HTML file, figures as one PDF.

A small notebook is executed in the test (a figure, planted model output in a print, a DataFrame and the
explorer's static table); the export must embed the image, load nothing from the network and keep the
planted markup inert."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from lekutils.__main__ import main
from lekutils.report import export as E

PLANTED = '<script>alert("pwned")</script><img src=x onerror=alert(2)>'
RAW = '<script>alert("raw")</script><img src=x onerror=alert(3)>'  # a raw HTML output: inert by the page's CSP


def _executed_report(run_dir: Path) -> Path:
    """Write and execute a small report-like notebook into ``<run_dir>/notebooks/90_p100_report.ipynb``."""
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 90 · Report (test)\n\nA *small* report."),
        nbformat.v4.new_code_cell(
            "import matplotlib\nmatplotlib.use('module://matplotlib_inline.backend_inline')\n"
            "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(3, 2))\n"
            "ax.bar(['baseline', 'json'], [17.4, 15.9]); ax.set_title('kernel effect')\nplt.show()"),
        nbformat.v4.new_code_cell(f"print({PLANTED!r})\n{PLANTED!r}"),
        nbformat.v4.new_code_cell(
            "import pandas as pd\nfrom IPython.display import HTML, display\n"
            "from lekutils.report.explorer import static_view\n"
            f"df = pd.DataFrame({{'model': ['m'], 'probe_set': ['P'], 'condition': ['json'], 'probe_id': ['P01'],"
            f" 'category': ['c'], 'score': [1.5], 'response': [{PLANTED!r}]}})\n"
            "display(static_view(df))\n"
            "df[['model', 'score', 'response']]"),
        nbformat.v4.new_code_cell(f"display(HTML('<p>raw html output</p>' + {RAW!r}))"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    env_cwd = str(Path(__file__).resolve().parents[1])
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": env_cwd}}).execute()
    out = run_dir / "notebooks" / "90_p100_report.ipynb"
    out.parent.mkdir(parents=True)
    nbformat.write(nb, str(out))
    return out


def _figures(folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True)
    for name, fmt in (("kernel_effect", ("png", "pdf")), ("category_heatmap", ("png", "pdf")),
                      ("score_distributions", ("png",))):
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.plot([0, 1], [0, 1])
        ax.set_title(name)
        for f in fmt:
            fig.savefig(folder / f"{name}.{f}", dpi=60)
        plt.close(fig)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("export") / "runs" / "toy"
    _executed_report(d)
    _figures(d / "figures")
    return d


def test_export_writes_self_contained_html_and_one_figures_pdf(run_dir: Path, capsys) -> None:
    from pypdf import PdfReader

    assert main(["export", "--run", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    html_path, pdf_path = run_dir / "report" / "90_p100_report.html", run_dir / "report" / "figures.pdf"
    assert str(html_path) in printed and str(pdf_path) in printed
    page = html_path.read_text(encoding="utf-8")
    assert "<title>LEK report: toy</title>" in page
    assert "data:image/png;base64," in page  # the figure is inline
    assert not re.search(r"""(src|href)=["']https?://""", page)  # nothing loaded from the network
    reader = PdfReader(str(pdf_path))
    assert len(reader.pages) == 3
    assert [o.title for o in reader.outline] == ["category_heatmap", "kernel_effect", "score_distributions"]
    assert not list((run_dir / "report").glob(".*tmp*"))


def test_model_output_stays_escaped(run_dir: Path, tmp_path: Path) -> None:
    out = E.export_report(run_dir, out_dir=tmp_path, pdf=False)
    page = out.html.read_text(encoding="utf-8")
    assert "pwned" in page  # the text is there ...
    assert '<script>alert("pwned")' not in page  # ... but never as markup
    assert not re.search(r"<img[^>]*onerror=alert\(2\)", page)
    assert page.count("&lt;script&gt;alert(&quot;pwned&quot;)") + page.count("&lt;script&gt;alert(\"pwned\")") >= 3
    assert "Content-Security-Policy" in page and "script-src 'none'" in page
    head = page[:page.index("</head>")]
    assert "<script" not in head  # the template's CDN loaders (mathjax, mermaid) are gone


def test_hide_code_and_errors(run_dir: Path, tmp_path: Path) -> None:
    page = E.export_report(run_dir, out_dir=tmp_path, pdf=False, hide_code=True).html.read_text(encoding="utf-8")
    assert "matplotlib.use(" not in page and "data:image/png;base64," in page
    empty = tmp_path / "runs" / "empty"
    with pytest.raises(E.ExportError, match=r"python -m lekutils run 90_p100_report --profile empty"):
        E.export_report(empty)
    (empty / "notebooks").mkdir(parents=True)
    shutil.copy(run_dir / "notebooks" / "90_p100_report.ipynb", empty / "notebooks" / "90_p100_report-exp1.ipynb")
    with pytest.raises(E.ExportError, match="no figures"):
        E.export_report(empty)  # the named experiment's notebook is found; figures are missing
    assert main(["export", "--run", str(empty)]) == 1
    nb = nbformat.read(run_dir / "notebooks" / "90_p100_report.ipynb", as_version=4)
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs = []
    nbformat.write(nb, str(tmp_path / "blank.ipynb"))
    with pytest.raises(E.ExportError, match="no outputs"):
        E.notebook_html(tmp_path / "blank.ipynb")


def test_exported_page_renders_offline_in_chromium(run_dir: Path, tmp_path: Path) -> None:
    """Where a browser exists: the page loads with no network request and its image decodes."""
    pw = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    chromium = os.environ.get("LEK_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        pytest.skip(f"no Chromium at {chromium} (apt-get install chromium)")
    page_path = E.export_report(run_dir, out_dir=tmp_path, pdf=False).html
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            requests: list[str] = []
            dialogs: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(page_path.as_uri())
            page.wait_for_load_state("load")
            widths = page.eval_on_selector_all(
                "img", "els => els.filter(e => e.src.startsWith('data:')).map(e => e.naturalWidth)")
            shot = Path(os.environ.get("LEK_SCREENSHOTS", tmp_path)) / "export-report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert widths and all(w > 0 for w in widths)
    assert dialogs == []  # no planted script ran
    assert shot.stat().st_size > 0
