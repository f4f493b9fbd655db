"""``python -m lekutils export [--profile P | --run DIR] [--notebook NB] [--out DIR]``: export the report.

Turns the executed report notebook (``<run>/notebooks/90_p100_report.ipynb``, written by
``python -m lekutils run``) into one self-contained HTML file with its figures inline, and collects the
report's figures (``<run>/figures/*.pdf``) into one PDF with a bookmark per figure. Both go to
``<run>/report/`` (``--out`` for another folder). Model output stays escaped in the HTML.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HELP = "export the executed report notebook to one self-contained HTML file and its figures to one PDF"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``export`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser("export", help=HELP, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--profile", default="demo", help="export runs/<profile> (default: demo)")
    where.add_argument("--run", help="the run folder (e.g. runs/smoke or a run's --out folder)")
    p.add_argument("--notebook", help="the executed notebook (default: <run>/notebooks/90_p100_report.ipynb)")
    p.add_argument("--figures", help="folder of the figures to collect (default: <run>/figures)")
    p.add_argument("--out", help="output folder (default: <run>/report)")
    p.add_argument("--hide-code", action="store_true", help="leave the code cells out of the HTML")
    p.add_argument("--no-pdf", action="store_true", help="HTML only")
    p.add_argument("--no-html", action="store_true", help="figures PDF only")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """0 on success; 1 when there is nothing to export yet (the message says what to run)."""
    from lekutils.core.paths import run_dir
    from lekutils.report.export import ExportError, export_report

    folder = Path(args.run) if args.run else run_dir(args.profile)
    try:
        res = export_report(folder, notebook=args.notebook, figures_dir=args.figures, out_dir=args.out,
                            html=not args.no_html, pdf=not args.no_pdf, hide_code=args.hide_code)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if res.html:
        print(f"report HTML: {res.html} ({res.html.stat().st_size / 1e6:.1f} MB, self-contained)")
    if res.pdf:
        print(f"figures PDF: {res.pdf} ({len(res.figures)} page(s): {', '.join(res.figures)})")
    return 0
