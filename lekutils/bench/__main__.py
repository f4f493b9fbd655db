"""`python -m lekutils.bench NAME [args]` runs ``lekutils.bench.NAME.main(args)``."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import lekutils.bench
from lekutils.core.blas import reexec_with_fast_blas


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = sorted(m.name for m in pkgutil.iter_modules(lekutils.bench.__path__) if not m.name.startswith("_"))
    if not argv or argv[0] not in names:
        print(f"usage: python -m lekutils.bench {{{','.join(names)}}} [args ...]", file=sys.stderr)
        return 2
    reexec_with_fast_blas()
    module = importlib.import_module(f"lekutils.bench.{argv[0]}")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
