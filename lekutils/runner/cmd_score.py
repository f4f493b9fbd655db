"""``python -m lekutils score FILE.jsonl [...] [--scorer v2] [-o OUT]``: re-score A/B result files.

Reads our A/B records and upstream's (``../shared/upstream/benchmarks/ab-*.jsonl``), scores
every response again, writes the re-scored records (``runs/rescored/<stem>.<scorer>.jsonl`` by
default) and prints, per file and condition, the stored mean beside the new one. Every input is
read and checked before anything is written: a malformed line stops the command with the file
and line, and no output file is written.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lekutils.core.errors import DataError
from lekutils.core.paths import run_dir
from lekutils.scoring import available_scorers
from lekutils.scoring.rescore import RescoredFile, format_means, output_path, rescore_file, write_rescored

HELP = "re-score A/B result files (ours or upstream's) and compare stored and new means"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``score`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser("score", help=HELP, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE.jsonl", help="A/B result files")
    p.add_argument("--scorer", default="v2", choices=available_scorers(), help="scorer (default: v2)")
    p.add_argument("-o", "--out", help="output file (one input, *.jsonl) or folder "
                                       "(default: runs/rescored/)")
    p.add_argument("--no-write", action="store_true", help="print the means only")
    p.add_argument("--processes", type=int, default=None,
                   help="worker processes (default: all cores for large inputs)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the command; 0 on success, 2 on bad input (nothing written)."""
    results: list[RescoredFile] = []
    errors: list[str] = []
    for f in args.files:
        try:
            results.append(rescore_file(f, args.scorer, args.processes))
        except DataError as e:
            errors.append(str(e))
        except OSError as e:
            errors.append(f"{f}: cannot read: {e.strerror or e}")
    if errors:
        print("\n".join(f"error: {e}" for e in errors) + "\nnothing written", file=sys.stderr)
        return 2
    default_dir = run_dir("rescored")
    targets = [output_path(r.path, args.out, len(results), args.scorer, default_dir) for r in results]
    if len(set(targets)) != len(targets):
        print("error: two inputs would write the same output file; use -o FOLDER", file=sys.stderr)
        return 2
    inputs = {r.path.resolve() for r in results}
    if any(t.resolve() in inputs for t in targets):
        print("error: an output would overwrite an input file; nothing written", file=sys.stderr)
        return 2
    print(format_means(results))
    if not args.no_write:
        for res, target in zip(results, targets, strict=True):
            write_rescored(res, target)
            print(f"wrote {target}")
    return 0
