"""Exclusive locks on run folders and work files, so two runs never write the same records.

:func:`hold` takes an OS file lock (``filelock``; released by the kernel when the holder dies, so
a ``kill -9`` never leaves a stale lock) on ``.<name>.lock`` beside a file, or ``<folder>/.lock``
for a folder, and writes a sidecar ``<lock>.json`` naming the holder (PID, host, start time,
command). A second holder either fails at once with :class:`LockedError` naming the target and the
holder's PID, or waits (``wait=True``).

Locks are re-entrant within a process (a per-path registry) and across processes that inherit
them: the holder exports ``LEK_HELD_LOCKS`` (``<lock path>=<token>`` pairs) so a child process
(the runner's Jupyter kernel) that asks for the same lock while the sidecar still carries the
parent's token proceeds instead of deadlocking on its parent.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ENV_VAR = "LEK_HELD_LOCKS"

_held: dict[str, list[int]] = {}  # lock path -> [owning thread, depth], for locks this process holds
_cond = threading.Condition()


class LockedError(RuntimeError):
    """The run folder or work file is locked by another process; names it and the holder."""

    def __init__(self, target: Path, holder: dict[str, Any] | None, hint: str):
        self.target, self.holder = target, holder or {}
        who = (f"PID {self.holder.get('pid')}" + (f" on {self.holder['host']}" if self.holder.get("host") else "")
               + (f", since {self.holder['started']}" if self.holder.get("started") else "")) \
            if self.holder.get("pid") else "a process whose PID is not yet recorded"
        super().__init__(f"{target} is in use by another run ({who}); {hint}")


def lock_path(target: str | os.PathLike[str], folder: bool | None = None) -> Path:
    """The lock file of a folder (``<folder>/.lock``) or of a file (``.<file name>.lock`` beside it)."""
    t = Path(target).absolute()
    return t / ".lock" if (t.is_dir() if folder is None else folder) else t.with_name(f".{t.name}.lock")


def holder(target: str | os.PathLike[str], folder: bool | None = None) -> dict[str, Any] | None:
    """The sidecar of the current holder of ``target``'s lock (None if unknown or free)."""
    try:
        return json.loads(Path(str(lock_path(target, folder)) + ".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _inherited() -> dict[str, str]:
    out = {}
    for part in os.environ.get(ENV_VAR, "").split(os.pathsep):
        path, sep, token = part.rpartition("=")
        if sep and path:
            out[path] = token
    return out


@contextmanager
def hold(target: str | os.PathLike[str], *, folder: bool | None = None, wait: bool = False,
         timeout: float | None = None, hint: str = "wait for it to finish", export: bool = False) -> Iterator[Path]:
    """Hold the exclusive lock of ``target`` (a folder, created if missing, or a file) for the block.

    ``folder`` says which ``target`` is (default: a folder if it is an existing directory).

    ``wait=False`` raises :class:`LockedError` at once when another process holds it; ``wait=True``
    blocks (up to ``timeout`` seconds when given, then raises). ``export=True`` puts the lock's
    token into ``LEK_HELD_LOCKS`` for child processes (the runner, for its Jupyter kernels).
    """
    import filelock

    t = Path(target).absolute()
    folder = t.is_dir() if folder is None else folder
    if folder:
        t.mkdir(parents=True, exist_ok=True)
    lp = lock_path(t, folder)
    key = str(lp)
    side = Path(key + ".json")
    me = threading.get_ident()
    with _cond:
        while key in _held and _held[key][0] != me:  # another thread of this process holds it
            if not wait:
                raise LockedError(t, holder(t, folder), hint)
            _cond.wait(0.1)
        if key in _held:  # re-entrant in this thread
            _held[key][1] += 1
            reentrant = True
        else:
            _held[key] = [me, 1]  # reserved for this thread while it takes the file lock
            reentrant = False
    if reentrant:
        try:
            yield t
        finally:
            with _cond:
                _held[key][1] -= 1
        return
    try:
        inherited = _inherited().get(key)
        if inherited is not None and (holder(t, folder) or {}).get("token") == inherited:
            yield t  # held by the process that started us (the runner, for its kernel)
            return
        lp.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(lp, preserve_lock_file=True, thread_local=False)
        try:
            lock.acquire(timeout=(-1 if timeout is None else timeout) if wait else 0)
        except filelock.Timeout:
            info = None
            for _ in range(10):  # the holder writes its sidecar just after it gets the lock
                info = holder(t, folder)
                if info:
                    break
                time.sleep(0.05)
            raise LockedError(t, info, hint) from None
        try:
            token = uuid.uuid4().hex
            info = {"pid": os.getpid(), "host": socket.gethostname(), "token": token,
                    "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": sys.argv[:6]}
            side.write_text(json.dumps(info), encoding="utf-8")
            old_env = os.environ.get(ENV_VAR)
            if export:
                os.environ[ENV_VAR] = os.pathsep.join(p for p in [old_env, f"{key}={token}"] if p)
            try:
                yield t
            finally:
                if export and old_env is None:
                    os.environ.pop(ENV_VAR, None)
                elif export:
                    os.environ[ENV_VAR] = old_env
                try:
                    side.unlink()
                except OSError:
                    pass
        finally:
            lock.release()
    finally:
        with _cond:
            _held.pop(key, None)
            _cond.notify_all()
