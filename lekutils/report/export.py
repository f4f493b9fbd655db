"""Export an executed report: one self-contained HTML file (nbconvert) and the figures as one PDF.

The HTML embeds every image as a data URI and loads nothing from the network: the template's
MathJax / require.js / mermaid scripts are dropped (the report has no math and, after Papermill, no
widgets; saved widget state is removed so no widget manager is fetched). Output that came from
models stays inert: nbconvert escapes text outputs, and the report's HTML outputs (tables, the
explorer's static view) are built from escaped strings. As a second line of defence the page
carries a Content-Security-Policy that allows no script at all and no request other than inline
(``data:``) images, styles and fonts: even a raw HTML output holding a script cannot run it.

The figures PDF merges the per-figure PDF files the report wrote (vector pages, one per figure,
with a bookmark each; :mod:`pypdf`); a figure saved only as PNG becomes an image page.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lekutils.core.jsonl import atomic_write_text

REPORT_NOTEBOOK = "90_p100_report"
#: Script tags of the nbconvert templates that fetch code from a CDN (MathJax, require.js, widgets).
_REMOTE_SCRIPT = re.compile(r"<script\b[^>]*\bsrc=[\"']https?://[^\"']*[\"'][^>]*>\s*</script>", re.I)
_MATHJAX_CONFIG = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.S | re.I)
_SCRIPT = re.compile(r"<script\b.*?</script>", re.S | re.I)
#: A static page: no scripts, nothing fetched; inline styles and data: images and fonts only.
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:; "
       "script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'")


class ExportError(RuntimeError):
    """The report cannot be exported (no executed notebook, no figures): says what to run first."""


@dataclass
class ExportResult:
    html: Path | None
    pdf: Path | None
    figures: list[str]


def _run_hint(run_dir: Path, name: str = REPORT_NOTEBOOK) -> str:
    """The command that makes the report of ``run_dir`` (``runs/<profile>`` or a ``--out`` folder)."""
    if run_dir.parent.name == "runs":
        return f"python -m lekutils run {name} --profile {run_dir.name}"
    return f"python -m lekutils run {name} --profile PROFILE --out {run_dir}"


def find_report_notebook(run_dir: str | os.PathLike[str], name: str = REPORT_NOTEBOOK) -> Path:
    """The executed report notebook of a run folder: ``<run_dir>/notebooks/<name>.ipynb``, else the newest
    ``<name>*.ipynb`` there (named experiments); an :class:`ExportError` saying what to run otherwise."""
    folder = Path(run_dir) / "notebooks"
    exact = folder / f"{name}.ipynb"
    if exact.is_file():
        return exact
    found = sorted(folder.glob(f"{name}*.ipynb"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    if found:
        return found[-1]
    raise ExportError(f"no executed report notebook in {folder}: run `{_run_hint(Path(run_dir), name)}` "
                      "first (or pass --notebook)")


def notebook_html(notebook: str | os.PathLike[str], *, title: str | None = None, hide_code: bool = False) -> str:
    """The executed notebook as one self-contained, script-free HTML page (images inline as data URIs)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    if not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"):
        raise ExportError(f"{notebook} has no outputs: execute it first (python -m lekutils run ...)")
    nb.metadata.pop("widgets", None)  # saved widget state would make the page fetch a widget manager
    quiet = logging.getLogger(f"{__name__}.nbconvert")  # not its warning on figures without alt text
    quiet.setLevel(logging.ERROR)
    exporter = HTMLExporter(template_name="lab", embed_images=True, exclude_input=hide_code,
                            exclude_input_prompt=hide_code, log=quiet)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title or Path(notebook).stem}})
    body = _REMOTE_SCRIPT.sub("", _MATHJAX_CONFIG.sub("", body))
    head, end = re.search(r"<head[^>]*>", body, re.I), body.lower().find("</head>")
    if head is None or end < 0:
        raise ExportError("nbconvert produced a page without <head>: cannot add the security policy")
    # the template's own scripts (mermaid, mathjax loaders: CDN code the report never needs) go
    meta = f'\n<meta http-equiv="Content-Security-Policy" content="{CSP}">'
    return body[:head.end()] + meta + _SCRIPT.sub("", body[head.end():end]) + body[end:]


def _png_page(png: Path) -> bytes:
    """A one-page PDF showing a PNG at its own aspect ratio (for figures saved without a PDF)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    img = mpimg.imread(str(png))
    h, w = img.shape[:2]
    fig = plt.figure(figsize=(8.0, 8.0 * h / w))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(img)
    ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="pdf")
    plt.close(fig)
    return buf.getvalue()


def figure_files(folder: str | os.PathLike[str]) -> list[Path]:
    """One file per figure of a folder, sorted by name: its PDF where there is one, else its PNG."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    by_name: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in (".pdf", ".png") and p.is_file() and not p.name.startswith("."):
            if p.stem not in by_name or p.suffix.lower() == ".pdf":
                by_name[p.stem] = p
    return [by_name[k] for k in sorted(by_name)]


def figures_pdf(files: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> Path:
    """Merge figure files (PDF pages kept as vectors; PNGs as image pages) into one PDF, a bookmark per
    figure; written atomically."""
    from pypdf import PdfReader, PdfWriter

    if not files:
        raise ExportError("no figure files to collect")
    writer = PdfWriter()
    for f in map(Path, files):
        source = io.BytesIO(_png_page(f)) if f.suffix.lower() == ".png" else str(f)
        writer.append(PdfReader(source), outline_item=f.stem)
    writer.add_metadata({"/Title": "LEK workbook report: figures"})
    buf = io.BytesIO()
    writer.write(buf)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, out)
    return out


def export_report(run_dir: str | os.PathLike[str], *, notebook: str | os.PathLike[str] | None = None,
                  figures_dir: str | os.PathLike[str] | None = None, out_dir: str | os.PathLike[str] | None = None,
                  html: bool = True, pdf: bool = True, hide_code: bool = False) -> ExportResult:
    """Write ``<out_dir>/<notebook>.html`` (self-contained) and ``<out_dir>/figures.pdf`` for a run folder
    (``out_dir`` defaults to ``<run_dir>/report``)."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else run_dir / "report"
    html_path = pdf_path = None
    names: list[str] = []
    if html:
        nb = Path(notebook) if notebook else find_report_notebook(run_dir)
        html_path = atomic_write_text(out / f"{nb.stem}.html",
                                      notebook_html(nb, title=f"LEK report: {run_dir.name}", hide_code=hide_code))
    if pdf:
        fig_dir = Path(figures_dir) if figures_dir else run_dir / "figures"
        files = figure_files(fig_dir)
        if not files:
            raise ExportError(f"no figures (PDF or PNG) in {fig_dir}: run the report notebook first "
                              f"(`{_run_hint(run_dir)}`)")
        pdf_path = figures_pdf(files, out / "figures.pdf")
        names = [f.stem for f in files]
    return ExportResult(html_path, pdf_path, names)
