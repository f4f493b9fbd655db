"""``python -m lekutils review accept|reject RAW.jsonl (--ids ID[:SAMPLE] ... | --all-kept)``: record review decisions.

The non-interactive path of the manual review (:mod:`lekutils.report.review`): appends one
decision per named kept example of a distillation file to its review file (default
``review.jsonl`` beside ``RAW.jsonl``; ``--review-file`` for another, e.g. the notebook's
``review_file`` parameter). A phase that requires review (phase 3's safety review,
``require_review``) trains only on accepted examples. ``--ids`` takes ``PROBE_ID`` (all its kept
samples) or ``PROBE_ID:SAMPLE_IDX``; ``--all-kept`` names every kept example.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HELP = "accept or reject kept distillation examples in a review file (non-interactive review)"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``review`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser("review", help=HELP, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("decision", choices=("accept", "reject"))
    p.add_argument("raw", metavar="RAW.jsonl", help="a phase's distillation file (raw.jsonl)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--ids", nargs="+", metavar="ID[:SAMPLE]", help="the examples to decide on")
    which.add_argument("--all-kept", action="store_true", help="every kept example of the file")
    p.add_argument("--review-file", help="review file (default: review.jsonl beside RAW.jsonl)")
    p.add_argument("--note", default="", help="note stored with each decision")
    p.add_argument("--reviewer", help="who decided (stored with each decision)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Record the decisions; 0 on success, 1 when an id matches no kept example."""
    from lekutils.report.review import record_decisions, select_examples
    from lekutils.tasks.extract import load_examples

    examples = load_examples(args.raw)
    try:
        chosen = list(examples) if args.all_kept else select_examples(examples, args.ids)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    path = Path(args.review_file) if args.review_file else Path(args.raw).with_name("review.jsonl")
    record_decisions(path, chosen, args.decision, args.note, reviewer=args.reviewer)
    print(f"{args.decision}: {len(chosen)} example(s) -> {path}")
    return 0
