"""``python -m lekutils kernelspec [--name lekutils]``: register the workbook's Jupyter kernel spec.

Installs a named ipykernel for this venv's interpreter (with its OpenBLAS environment) into
``<venv>/share/jupyter/kernels/<name>``; the notebooks declare the kernel spec ``lekutils``.
(Not to be confused with the ethics kernels the A/B conditions put in the system prompt.)
"""

from __future__ import annotations

import argparse
from typing import Any

from lekutils.runner.execute import KERNELSPEC_NAME, install_kernelspec

HELP = "register the workbook's Jupyter kernel spec (a named ipykernel) for this venv"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``kernelspec`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser("kernelspec", help=HELP, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default=KERNELSPEC_NAME, help=f"kernel spec name (default: {KERNELSPEC_NAME})")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    print(f"installed Jupyter kernel spec '{args.name}' in {install_kernelspec(args.name)}")
    return 0
