"""JSONL reading with precise errors, atomic file writes, and an append-only resumable store.

The resumable store is the workbook's answer to "nothing lost": every record is one line,
written with a single ``write`` on an ``O_APPEND`` descriptor and flushed with ``fsync``. A run
killed mid-write leaves at most one truncated last line, which :class:`JsonlStore` cuts off when
it reopens the file; records are keyed, so a resumed run skips what is already there and never
writes a key twice.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from lekutils.core.errors import DataError, Problem

Record = dict[str, Any]


def _read_bytes(path: Path, what: str = "JSONL file") -> bytes:
    """The file's bytes; a one-line :class:`DataError` for a directory or an unreadable file."""
    if path.is_dir():
        raise DataError(path, f"expected a {what}, found a directory")
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(path, f"cannot read {what}: {e.strerror or e}") from e


def _parse_line(raw: bytes, n: int, problems: list[Problem]) -> Record | None:
    """One JSONL line as a dict, or None (blank) / a :class:`Problem` appended (bad UTF-8 or JSON)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        problems.append(Problem(f"not UTF-8 text (byte {e.start} of the line)", line=n))
        return None
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        problems.append(Problem(f"invalid JSON: {e.msg}", line=n, column=e.colno))
        return None
    if not isinstance(obj, dict):
        problems.append(Problem(f"expected a JSON object, got {type(obj).__name__}", line=n))
        return None
    return obj


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, Record]]:
    """Yield ``(line_number, record)`` for each non-blank line; raise :class:`DataError` naming the
    file and lines on bad UTF-8 or bad JSON (all problems of the file in one error).

    Lines are split on ``\n`` only: ``str.splitlines()`` would also break on U+2028/U+2029/U+0085,
    which ``json.dumps(ensure_ascii=False)`` writes raw inside strings.
    """
    path = Path(path)
    problems: list[Problem] = []
    out: list[tuple[int, Record]] = []
    for n, raw in enumerate(_read_bytes(path).split(b"\n"), start=1):
        obj = _parse_line(raw, n, problems)
        if obj is not None:
            out.append((n, obj))
    if problems:
        raise DataError(path, problems)
    yield from out


def read_jsonl(path: str | os.PathLike[str]) -> list[Record]:
    """Read a whole JSONL file into a list of dicts (see :func:`iter_jsonl` for errors)."""
    return [rec for _, rec in iter_jsonl(path)]


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    _atomic_write_bytes(path, text.encode("utf-8"))
    return path


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


def atomic_write_jsonl(path: str | os.PathLike[str], records: Iterable[Record]) -> Path:
    """Write records as JSONL atomically (all or nothing)."""
    text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
    return atomic_write_text(path, text)


def atomic_write_csv(path: str | os.PathLike[str], frame: Any) -> Path:
    """Write a pandas DataFrame (or a list of dict rows) to CSV atomically."""
    if hasattr(frame, "to_csv"):
        text = frame.to_csv(index=False)
    else:
        rows = list(frame)
        buf = io.StringIO()
        if rows:
            w = csv.DictWriter(buf, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        text = buf.getvalue()
    return atomic_write_text(path, text)


class JsonlStore:
    """Append-only JSONL file of keyed records that survives ``kill -9``.

    ``key`` maps a record to its identity (e.g. ``(probe_id, condition)``); records whose key
    is already in the file are refused by :meth:`append` (returns False). On open, a truncated
    last line (a write interrupted by a crash) is cut off; a malformed line anywhere else is an
    error naming the line.
    """

    def __init__(self, path: str | os.PathLike[str], key: Callable[[Record], Any]):
        self.path = Path(path)
        self.key = key
        self._records: list[Record] = []
        self._keys: set[Any] = set()
        self.repaired_bytes = 0
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = _read_bytes(self.path)
        good_end = data.rfind(b"\n") + 1  # everything after the last newline is a torn write
        tail = data[good_end:]
        if tail.strip():
            try:  # a complete record that only lacks its newline is kept
                json.loads(tail.decode("utf-8"))
                data, good_end = data + b"\n", len(data) + 1
                with self.path.open("ab") as fh:
                    fh.write(b"\n")
            except (UnicodeDecodeError, json.JSONDecodeError):  # cut anywhere, even inside a UTF-8 sequence
                self.repaired_bytes = len(tail)
        if good_end < len(data) or self.repaired_bytes:
            with self.path.open("r+b") as fh:
                fh.truncate(good_end)
                fh.flush()
                os.fsync(fh.fileno())
        problems: list[Problem] = []
        for n, raw in enumerate(data[:good_end].split(b"\n"), start=1):
            rec = _parse_line(raw, n, problems)
            if rec is None:
                continue
            k = self.key(rec)
            if k in self._keys:
                problems.append(Problem(f"duplicate record key {k!r}", line=n))
                continue
            self._keys.add(k)
            self._records.append(rec)
        if problems:
            raise DataError(self.path, problems)

    def __contains__(self, key: Any) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._records)

    @property
    def keys(self) -> set[Any]:
        return set(self._keys)

    def records(self) -> list[Record]:
        return list(self._records)

    def append(self, record: Record) -> bool:
        """Append one record durably; return False (and write nothing) if its key exists."""
        return self.extend([record]) == 1

    def extend(self, records: Iterable[Record]) -> int:
        """Append several records with one write and one fsync; return how many were new."""
        new: list[Record] = []
        for rec in records:
            k = self.key(rec)
            if k in self._keys:
                continue
            self._keys.add(k)
            new.append(rec)
        if not new:
            return 0
        payload = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in new).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(payload)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        self._records.extend(new)
        return len(new)
