"""Command line: ``python -m lekutils run|score|kernel ...``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from lekutils.core.blas import reexec_with_fast_blas

# Command modules providing add_parser(subparsers) and run(args) -> int, registered when present.
_COMMAND_MODULES = ("lekutils.runner.cmd_score",)


def _cmd_run(args: argparse.Namespace) -> int:
    from lekutils.core.errors import DataError, ParameterError
    from lekutils.runner import run as runner

    def on_event(kind: str, ex: runner.Execution, info: dict) -> None:
        if kind == "start":
            print(f"\n[{info['index'] + 1}/{info['total']}] {ex.name}  ({ex.notebook.name})", flush=True)
        else:
            print(f"    done in {info['duration_s']:.1f}s -> {ex.output}", flush=True)

    try:
        overrides = runner.parse_overrides(args.param or [])
        manifest = runner.run_pipeline(
            args.profile, args.notebooks, [Path(f) for f in args.file or []], overrides,
            out_dir=Path(args.out).resolve() if args.out else None, argv=sys.argv,
            params_root=Path(args.params_root).resolve() if args.params_root else runner.PARAMS_DIR, dry_run=args.dry_run,
            progress_bar=not args.no_progress, on_event=on_event,
        )
    except (ParameterError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except runner.ExecutionFailed as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(runner.dumps([{"name": e["name"], "parameters": e["parameters"]} for e in manifest["executions"]]))
        return 0
    print(f"\nprofile '{args.profile}' finished in {manifest['duration_s']:.1f}s (blas: {manifest['blas']})")
    print(runner.manifest_summary(manifest))
    return 0


def _cmd_kernel(args: argparse.Namespace) -> int:
    from lekutils.runner.run import install_kernel

    print(f"installed kernel spec in {install_kernel(args.name)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lekutils", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="execute notebooks of a profile's pipeline with Papermill")
    p.add_argument("notebooks", nargs="*", help="executions or notebooks to run (default: the whole pipeline)")
    p.add_argument("--profile", default="smoke", help="params/<profile>/pipeline.yaml (default: smoke)")
    p.add_argument("-p", "--param", action="append", metavar="KEY=VALUE",
                   help="parameter override (highest precedence); scope with EXECUTION.KEY=VALUE")
    p.add_argument("-f", "--file", action="append", metavar="YAML", help="extra parameter file")
    p.add_argument("--out", help="output folder (default runs/<profile>)")
    p.add_argument("--params-root", help="folder holding <profile>/pipeline.yaml (default params/)")
    p.add_argument("--dry-run", action="store_true", help="validate and print resolved parameters only")
    p.add_argument("--no-progress", action="store_true", help="no per-cell progress bars")
    p.set_defaults(func=_cmd_run)
    k = sub.add_parser("kernel", help="register the workbook's named ipykernel for this venv")
    k.add_argument("--name", default="lekutils")
    k.set_defaults(func=_cmd_kernel)
    for mod in _COMMAND_MODULES:
        try:
            module = importlib.import_module(mod)
            cmd = module.add_parser(sub)
            if cmd is not None and cmd.get_default("func") is None:
                cmd.set_defaults(func=module.run)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
    return parser


def main(argv: list[str] | None = None) -> int:
    reexec_with_fast_blas()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
