"""``python -m lekutils model SPEC [--mlx-dir]``: what a model spec resolves to.

Prints the model's fingerprint (kind, source file or folder, SHA-256 of the weights) as JSON; with
``--mlx-dir`` only the MLX folder that stock mlx-lm opens (an embedded model or a ``.gguf`` file is
converted into the cache once), e.g.
``mlx_lm.generate --model "$(lek model embedded:smollm2-135m-instruct --mlx-dir)" --adapter-path runs/demo/adapters/phase4``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

HELP = "show what a model spec resolves to (fingerprint; --mlx-dir: the folder stock mlx-lm loads)"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``model`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser("model", help=HELP, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="embedded:<name>, a .gguf file, an MLX model folder or a Hugging Face id")
    p.add_argument("--mlx-dir", action="store_true", help="print only the MLX folder (converting once if needed)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from lekutils.engine.models import fingerprint, mlx_model_dir

    try:
        if args.mlx_dir:
            print(mlx_model_dir(args.spec))
        else:
            print(json.dumps(fingerprint(args.spec), indent=2))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
