"""``python -m lekutils exec COMMAND [ARGS ...]`` (or ``lek exec ...``): run any command on OpenBLAS.

MLX's Linux CPU wheel computes with the reference BLAS unless OpenBLAS is preloaded into the
process at start; this runs COMMAND with the preload in its environment, e.g.
``lek exec python my_analysis.py``, ``lek exec jupyter lab``, ``lek exec papermill in.ipynb out.ipynb``.
On macOS (Accelerate) and where no OpenBLAS is installed the command runs unchanged.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lekutils.core.blas import exec_with_fast_blas

HELP = "run a command (a script, jupyter, papermill) with MLX on OpenBLAS"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``exec`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser("exec", help=HELP, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="COMMAND [ARGS ...]", help="the command to run")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    command = list(args.argv)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("error: exec needs a command, e.g. `lek exec python my_script.py`", file=sys.stderr)
        return 2
    try:
        exec_with_fast_blas(command)
    except FileNotFoundError:
        print(f"error: command not found: {command[0]}", file=sys.stderr)
        return 127
    return 0  # not reached: the process was replaced
