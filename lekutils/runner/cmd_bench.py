"""``python -m lekutils bench generate|score|train|serve [args ...]``: the benchmark scripts of :mod:`lekutils.bench`.

Each benchmark parses its own options (``python -m lekutils bench NAME --help``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

HELP = ("benchmarks: generate (engine vs upstream loop), score (scorer speed), train (LoRA steps/s), "
        "serve (in-process engine vs 1 vs 2 local mlx_lm.server), dp_train (1 vs N data-parallel processes)")


def _generate(argv: list[str]) -> int:
    from lekutils.bench.generate import main

    return main(argv)


def _score(argv: list[str]) -> int:
    from lekutils.bench.score import main

    return main(argv)


def _train(argv: list[str]) -> int:
    from lekutils.bench.train import main

    return main(argv)


def _serve(argv: list[str]) -> int:
    from lekutils.bench.serve import main

    return main(argv)


def _dp_train(argv: list[str]) -> int:
    from lekutils.bench.dp_train import main

    return main(argv)


BENCHMARKS: dict[str, Callable[[list[str]], int]] = {"generate": _generate, "score": _score, "train": _train,
                                                     "serve": _serve, "dp_train": _dp_train}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser("bench", help=HELP, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own options (see NAME --help)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    return int(BENCHMARKS[args.name](list(args.args)) or 0)
