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


def duplicate_keys(text: str, line_offset: int = 0) -> list[Problem]:
    """Problems naming every key repeated within one object of a (valid) JSON text, with its line.

    ``json`` keeps the last of repeated keys silently; the workbook refuses them. ``line_offset``
    is added to the line numbers (for a JSONL line).
    """
    if text.count('"') < 4:
        return []
    from bisect import bisect_right
    from json.decoder import scanstring

    newlines = [i for i, ch in enumerate(text) if ch == "\n"]
    problems: list[Problem] = []
    stack: list[list[Any]] = []  # [is_object, {key: line}, expecting_key]
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "{":
            stack.append([True, {}, True])
        elif ch == "[":
            stack.append([False, None, False])
        elif ch in "}]":
            if stack:
                stack.pop()
        elif ch == ",":
            if stack and stack[-1][0]:
                stack[-1][2] = True
        elif ch == '"':
            try:
                value, end = scanstring(text, i + 1)
            except ValueError:
                return problems  # not valid JSON: the parser's own error names the place
            top = stack[-1] if stack else None
            if top is not None and top[0] and top[2]:
                line = bisect_right(newlines, i) + 1 + line_offset
                if value in top[1]:
                    problems.append(Problem(f"duplicate key {value!r} (first on line {top[1][value]})", line=line))
                else:
                    top[1][value] = line
                top[2] = False
            i = end
            continue
        i += 1
    return problems


def _has_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise _Duplicate()
    return d


class _Duplicate(ValueError):
    pass


def loads_strict(text: str, path: object, line_offset: int = 0) -> Any:
    """``json.loads`` that raises :class:`DataError` (file, line, column) on bad JSON and on
    repeated keys in an object (which ``json`` would silently resolve to the last)."""
    try:
        return json.loads(text, object_pairs_hook=_has_duplicates)
    except _Duplicate:
        raise DataError(path, duplicate_keys(text, line_offset)) from None
    except json.JSONDecodeError as e:
        raise DataError(path, Problem(f"invalid JSON: {e.msg}", line=e.lineno + line_offset,
                                      column=e.colno)) from None


def read_json_file(path: str | os.PathLike[str], what: str = "JSON file") -> Any:
    """A UTF-8 JSON file's value; :class:`DataError` naming the file (and line) on any problem:
    a directory, an unreadable file, bad UTF-8, bad JSON, repeated keys."""
    path = Path(path)
    raw = _read_bytes(path, what)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(path, Problem(f"{what} is not UTF-8 text (byte {e.start})", line=line)) from None
    return loads_strict(text, path)


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


def sweep_temp_files(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files a killed atomic write of ``path`` left beside it
    (``.<name>.*.tmp``); call it only while holding the file's lock. Returns what was removed."""
    path = Path(path)
    gone = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp") if path.parent.is_dir() else []:
        try:
            tmp.unlink()
            gone.append(tmp)
        except OSError:
            pass
    return gone


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
