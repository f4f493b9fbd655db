"""Kernel files -> named A/B conditions.

A condition is ``baseline`` (no system message) or one kernel file whose RAW text, unparsed, is
the system message (upstream used the JSON kernel's text verbatim, braces and all). The engine
folds the system text into the first user turn where the chat template has no system role.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lekutils.core.errors import DataError, Problem, read_text_file
from lekutils.core.paths import DATA_DIR

PathLike = str | os.PathLike[str]

BASELINE = "baseline"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: The example kernel this team ships (our own text), in both forms.
EXAMPLE_KERNELS: dict[str, Path] = {
    "json": DATA_DIR / "kernels" / "lek-example-v1.json",
    "txt": DATA_DIR / "kernels" / "lek-example-v1.txt",
}


@dataclass(frozen=True)
class Condition:
    """A named A/B condition: ``system`` is None for the baseline."""

    name: str
    system: str | None
    path: str | None
    sha256: str | None

    def to_dict(self) -> dict[str, str | int | None]:
        """Metadata for records and manifests (without the kernel text)."""
        return {"name": self.name, "path": self.path, "sha256": self.sha256,
                "chars": None if self.system is None else len(self.system)}


def read_kernel(path: PathLike) -> tuple[str, str]:
    """Return ``(raw_text, sha256_of_bytes)`` of a kernel file; validate it is usable.

    The text is returned exactly as stored (no stripping, no parsing). A ``.json`` kernel must
    still be valid JSON (a broken file is almost always a mistake); errors name line and column.
    """
    path = Path(path)
    text, raw = read_text_file(path, "kernel file")
    if not text.strip():
        raise DataError(path, "kernel file is empty")
    if path.suffix.lower() == ".json":
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(path, Problem(f"invalid JSON: {e.msg}", line=e.lineno, column=e.colno)) from e
    return text, "sha256:" + hashlib.sha256(raw).hexdigest()


def conditions(kernels: Mapping[str, PathLike] | Sequence[PathLike] | None = None,
               baseline: bool = True) -> list[Condition]:
    """``baseline`` (if asked) then one condition per kernel file, in the given order.

    ``kernels`` maps condition names to files (e.g. ``{"json": ..., "txt": ...}`` as upstream);
    a plain sequence of paths is named by file suffix (``json``, ``txt``), else by file stem.
    ``None`` means the shipped example kernels.
    """
    if kernels is None:
        kernels = EXAMPLE_KERNELS
    if not isinstance(kernels, Mapping):
        paths = [Path(p) for p in kernels]
        suffixes = [p.suffix.lstrip(".").lower() for p in paths]
        use_suffix = len(set(suffixes)) == len(suffixes) and all(suffixes)
        kernels = {(s if use_suffix else p.stem): p for s, p in zip(suffixes, paths, strict=True)}
        if len(kernels) != len(paths):
            raise ValueError(f"kernel files need distinct names; pass a mapping: {[str(p) for p in paths]}")
    out = [Condition(BASELINE, None, None, None)] if baseline else []
    for name, path in kernels.items():
        if not _NAME.match(name) or name == BASELINE:
            raise ValueError(f"invalid condition name {name!r}: letters, digits, '_', '.', '-'; "
                             f"not {BASELINE!r}")
        text, digest = read_kernel(path)
        out.append(Condition(name, text, str(path), digest))
    if not out:
        raise ValueError("no conditions: give kernel files or baseline=True")
    return out


def kernel_hashes(conds: Sequence[Condition]) -> dict[str, str]:
    """``{condition name: sha256}`` of the kernel conditions (for records and manifests)."""
    return {c.name: c.sha256 for c in conds if c.sha256 is not None}
