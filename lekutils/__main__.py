"""The workbook's command line: ``python -m lekutils COMMAND ...`` (or ``lek COMMAND ...``).

Commands: run (execute notebooks), score (re-score A/B files), gates (check a phase's gates),
bench (benchmarks), kernelspec (register the Jupyter kernel spec), review (accept/reject distilled
examples without the panel), export (the report as one HTML file and its figures as one PDF),
upstream (fetch the upstream reference data at the pinned commit), exec (run any command, e.g. your
own script or jupyter, with MLX on OpenBLAS), model (what a model spec resolves to; --mlx-dir: the
folder stock mlx-lm loads). One module per command in
``lekutils/runner/cmd_*.py``, each with ``add_parser(subparsers)`` setting ``func``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from lekutils.core.blas import reexec_with_fast_blas


def build_parser() -> argparse.ArgumentParser:
    from lekutils.runner import (
        cmd_bench,
        cmd_exec,
        cmd_export,
        cmd_gates,
        cmd_kernelspec,
        cmd_model,
        cmd_review,
        cmd_run,
        cmd_score,
        cmd_upstream,
    )

    parser = argparse.ArgumentParser(prog="python -m lekutils", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (cmd_run, cmd_score, cmd_gates, cmd_bench, cmd_kernelspec, cmd_review, cmd_export, cmd_upstream,
                    cmd_exec, cmd_model):
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    reexec_with_fast_blas()  # before the command modules (and numpy/mlx) are imported
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
