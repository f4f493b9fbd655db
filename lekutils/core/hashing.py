"""The one hasher: SHA-256 of bytes, files (optionally cached by size and mtime) and JSON values.

Digests are lower-case hex; :func:`tagged` adds the ``sha256:`` prefix used in records and
manifests where a reader must see which algorithm made the digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

_BLOCK = 1 << 22
_lock = threading.Lock()


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_json(obj: Any, *, length: int | None = None) -> str:
    """Hex SHA-256 of ``obj`` as canonical JSON (sorted keys, ``str`` for other types); ``length``
    keeps only the first characters (content keys)."""
    digest = sha256_bytes(json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False).encode("utf-8"))
    return digest[:length] if length else digest


def tagged(digest: str) -> str:
    """``sha256:<digest>``."""
    return "sha256:" + digest


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike[str], *, cached: bool = False) -> str:
    """Hex SHA-256 of a file's bytes.

    ``cached=True`` (for model weights of hundreds of MB) remembers the digest in the user cache
    (``<cache_dir>/sha256-index.json``) keyed by the resolved path, size and mtime.
    """
    p = Path(path).resolve()
    if not cached:
        return _hash_file(p)
    from lekutils.core.jsonl import atomic_write_json
    from lekutils.core.paths import cache_dir

    st = p.stat()
    key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    index = cache_dir() / "sha256-index.json"

    def known() -> dict[str, str]:
        try:
            return json.loads(index.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    with _lock:
        hit = known().get(key)
    if hit:
        return hit
    digest = _hash_file(p)
    with _lock:
        table = known()
        table[key] = digest
        atomic_write_json(index, table)
    return digest
