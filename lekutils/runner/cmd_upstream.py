"""``python -m lekutils upstream fetch|verify|where``: the upstream LEK reference data on any machine.

``fetch`` clones the upstream repositories (LetheanNetwork/LEM: seeds and published A/B records;
dAppCore/agent: the JSON kernel) at the commits pinned in ``data/upstream/pin.json``, verifies the
sha256 of every file the workbook reads, and installs them under the workbook's names in
``~/.cache/lekutils/upstream/<commits>`` (``$LEK_CACHE`` / ``$XDG_CACHE_HOME`` move the cache). The
workbook then finds them with no further setting. All or nothing: a missing or changed file stops the
fetch and leaves nothing in the cache. ``--url`` / ``--commit`` override the LEM source (e.g. a
mirror or a local clone); ``--source NAME=URL[@COMMIT]`` any source.

``verify [DIR]`` checks a folder (default: the one in use) against the pin; ``where`` shows the
lookup order: ``$LEK_UPSTREAM``, then the fetched folder, then ``../shared/upstream``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HELP = "fetch the upstream LEK reference data at the pinned commit (verified), or show where it is"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``upstream`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser("upstream", help=HELP, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    f = sub.add_parser("fetch", help="clone the pinned commits into the cache and verify every file")
    f.add_argument("--url", help="URL of the LEM source (default: the pin's, GitHub)")
    f.add_argument("--commit", help="commit of the LEM source (default: the pin's)")
    f.add_argument("--source", action="append", default=[], metavar="NAME=URL[@COMMIT]",
                   help="override any source of the pin (repeatable), e.g. agent=file:///src/agent")
    f.add_argument("--cache", help="cache folder (default: <user cache>/lekutils/upstream)")
    f.add_argument("--pin", help="pin file (default: data/upstream/pin.json)")
    f.add_argument("--force", action="store_true", help="fetch again even where a verified copy exists")
    v = sub.add_parser("verify", help="check a folder's files against the pinned sha256")
    v.add_argument("dir", nargs="?", help="folder to check (default: the one the workbook uses)")
    v.add_argument("--pin", help="pin file (default: data/upstream/pin.json)")
    sub.add_parser("where", help="show the lookup order and the folder in use")
    p.set_defaults(func=run)
    return p


def _pin(args: argparse.Namespace):  # noqa: ANN202 - Pin, imported lazily
    from lekutils.core.upstream import load_pin

    pin = load_pin(args.pin) if getattr(args, "pin", None) else load_pin()
    if getattr(args, "url", None) or getattr(args, "commit", None):
        pin = pin.with_source("lem", url=args.url, commit=args.commit)
    for spec in getattr(args, "source", []) or []:
        name, sep, rest = spec.partition("=")
        if not sep or not rest:
            raise ValueError(f"--source needs NAME=URL[@COMMIT], got {spec!r}")
        url, _, commit = rest.rpartition("@") if "@" in rest.split("/")[-1] else (rest, "", "")
        pin = pin.with_source(name, url=url, commit=commit or None)
    return pin


def run(args: argparse.Namespace) -> int:
    from lekutils.core.errors import DataError
    from lekutils.core.upstream import UpstreamError, candidates, fetch, find_upstream, verify

    try:
        if args.action == "fetch":
            folder = fetch(_pin(args), cache=args.cache, force=args.force, say=print)
            print(f"upstream data ready: {folder}\nthe workbook finds it there (unless $LEK_UPSTREAM is set); "
                  f"for other tools: export LEK_UPSTREAM={folder}")
            return 0
        if args.action == "verify":
            folder = Path(args.dir) if args.dir else find_upstream()
            problems = verify(folder, _pin(args))
            for p in problems:
                print(f"  - {p}", file=sys.stderr)
            print(f"{folder}: " + (f"{len(problems)} problem(s)" if problems else "every pinned file matches"))
            return 1 if problems else 0
        for label, folder, usable in candidates():
            state = "not set" if folder is None else ("present" if usable else "absent")
            print(f"{label:<45} {folder or '-'}  [{state}]")
        print(f"in use: {find_upstream()}")
        return 0
    except (UpstreamError, DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
