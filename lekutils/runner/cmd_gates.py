"""``python -m lekutils gates AB.jsonl [--spec JSON] [--creative ID ...] [--base BASE.jsonl]``: gate an A/B file.

Computes a phase's regression gates (:mod:`lekutils.train.gates`) from an existing A/B result
file (and the base model's, for rules relative to it), prints the table, writes ``gates.json``
with ``--out``, and exits 1 on a failed gate unless ``--allow-failure``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lekutils.train.gates import CURRICULUM_GATES, GateFailed, gate_ab_files

HELP = "check a training phase's regression gates on an A/B result file (exit 1 on a failed gate)"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``gates`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser("gates", help=HELP, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ab", metavar="AB.jsonl", help="the adapter's A/B result file")
    p.add_argument("--spec", default=json.dumps(CURRICULUM_GATES), help="gate rules as JSON (default: curriculum)")
    p.add_argument("--creative", action="append", default=[], metavar="ID", help="creative probe id (repeatable)")
    p.add_argument("--base", metavar="BASE.jsonl", help="the base model's A/B file (for *_vs_base rules)")
    p.add_argument("--phase", default="?", help="phase number for the report")
    p.add_argument("--out", help="folder for gates.json (and tables/gates_phase<K>.csv)")
    p.add_argument("--allow-failure", action="store_true", help="record failed gates without exit 1")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the command; 0 when every gate passes (or failures are allowed), 1 on a failed gate."""
    try:
        report = gate_ab_files(args.phase, args.ab, json.loads(args.spec), creative_ids=args.creative,
                               base_ab_path=args.base, allow_failure=args.allow_failure, out_dir=args.out)
    except GateFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.to_frame().to_string(index=False))
    return 0
