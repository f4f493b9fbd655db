"""``python -m lekutils run [NOTEBOOK ...] [--profile P] [-p KEY=VALUE] [-f YAML]``: execute a profile's pipeline."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from lekutils.core.errors import DataError, ParameterError
from lekutils.core.lock import LockedError
from lekutils.core.paths import PARAMS_DIR
from lekutils.runner.execute import ExecutionFailed, run_pipeline
from lekutils.runner.manifest import dumps, manifest_summary
from lekutils.runner.params import parse_overrides
from lekutils.runner.profile import Execution

HELP = "execute notebooks of a profile's pipeline with Papermill"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``run`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser("run", help=HELP, description=__doc__)
    p.add_argument("notebooks", nargs="*", help="executions or notebooks to run (default: the whole pipeline)")
    p.add_argument("--profile", default="demo",
                   help="params/<profile>/pipeline.yaml (default: demo, the study; smoke: the quick plumbing run)")
    p.add_argument("-p", "--param", action="append", metavar="KEY=VALUE",
                   help="parameter override (highest precedence); scope with EXECUTION.KEY=VALUE")
    p.add_argument("-f", "--file", action="append", metavar="YAML", help="extra parameter file")
    p.add_argument("--out", help="output folder (default runs/<profile>)")
    p.add_argument("--name", default="", metavar="EXPERIMENT",
                   help="a named re-run: results written beside the earlier ones (e.g. ab/<model>@EXPERIMENT.jsonl) "
                        "instead of replacing them; for notebooks with an 'experiment' parameter (80_ab_test, "
                        "90_p100_report)")
    p.add_argument("--params-root", help="folder holding <profile>/pipeline.yaml (default params/)")
    p.add_argument("--dry-run", action="store_true", help="validate and print resolved parameters only")
    p.add_argument("--wait-lock", action="store_true",
                   help="if another run holds the run folder, wait for it instead of failing at once")
    p.add_argument("--no-progress", action="store_true", help="no per-cell progress bars")
    p.set_defaults(func=run)
    return p


def _on_event(kind: str, ex: Execution, info: dict[str, Any]) -> None:
    if kind == "start":
        print(f"\n[{info['index'] + 1}/{info['total']}] {ex.key}  ({ex.notebook.name})", flush=True)
    else:
        print(f"    done in {info['duration_s']:.1f}s -> {ex.output}", flush=True)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace) -> int:
    """Run the command; 0 on success, 1 when a notebook fails, 2 on bad parameters or data or a locked run folder."""
    if not args.dry_run:  # SIGTERM ends the run like Ctrl-C: the manifest records it as interrupted
        signal.signal(signal.SIGTERM, _terminate)
    try:
        overrides = parse_overrides(args.param or [])
        manifest = run_pipeline(
            args.profile, args.notebooks, [Path(f) for f in args.file or []], overrides,
            out_dir=Path(args.out).resolve() if args.out else None, argv=sys.argv,
            params_root=Path(args.params_root).resolve() if args.params_root else PARAMS_DIR, dry_run=args.dry_run,
            progress_bar=not args.no_progress, wait_lock=args.wait_lock, on_event=_on_event, name=args.name,
        )
    except (ParameterError, DataError, LockedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nerror: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except ExecutionFailed as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(dumps([{"name": e["name"], "parameters": e["parameters"]} for e in manifest["executions"]]))
        return 0
    print(f"\nprofile '{args.profile}' finished in {manifest['duration_s']:.1f}s (blas: {manifest['blas']})")
    print(manifest_summary(manifest))
    return 0
