"""Progress of long work, shown in the notebook and in the terminal of ``python -m lekutils run``.

Notebooks wrap generation and training in :func:`progress_bar`: a ``tqdm.auto`` bar (a widget in
Jupyter) that also writes a small JSON snapshot — samples done, generated tokens per second, ETA;
or step, loss and iterations per second — to the file named by ``LEK_PROGRESS_FILE`` when that
variable is set. The runner sets it for each notebook it executes (the kernel inherits the
runner's environment) and prints the snapshots as concise live lines (:class:`ProgressWatcher`),
so an hours-long run shows more than "5/9 cells".

Snapshots are written atomically and at most every ``interval`` seconds, so the cost is nil.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

ENV = "LEK_PROGRESS_FILE"


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """A progress bar for one stage of work (``desc``) with ``total`` units (samples or steps).

    Call it as ``bar(n, tokens=k)`` after ``n`` units that produced ``k`` generated tokens (the
    generation loop passes ``tokens``), or ``bar.step(step, total, row)`` from a training loop.
    """

    def __init__(self, total: int | None, desc: str, *, unit: str = "it", interval: float = 1.0,
                 channel: str | os.PathLike[str] | None = None, bar: Any = None):
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.n, self.tokens, self.postfix = 0, 0, {}
        self.t0 = time.monotonic()
        self._last_write = 0.0
        self.channel = Path(channel) if channel else (Path(os.environ[ENV]) if os.environ.get(ENV) else None)
        self.bar = bar

    # -- the units of work ---------------------------------------------------------------------
    def __call__(self, n: int = 1, *, tokens: int = 0) -> None:
        self.n += n
        self.tokens += tokens
        if self.bar is not None:
            self.bar.update(n)
            if self.tokens:
                self.bar.set_postfix(tok_s=f"{self.tok_s:.0f}", refresh=False)
        self._publish()

    update = __call__

    def step(self, step: int, total: int | None = None, row: dict[str, Any] | None = None) -> None:
        """Training: the optimizer step just finished (``row`` holds ``train_loss`` etc.)."""
        if total is not None:
            self.total = total
        self.n = step
        if row and row.get("train_loss") is not None:
            self.postfix["loss"] = round(float(row["train_loss"]), 4)
        if row and row.get("val_loss") is not None:
            self.postfix["val_loss"] = round(float(row["val_loss"]), 4)
        if self.bar is not None:
            self.bar.n = step
            if "loss" in self.postfix:
                self.bar.set_postfix(loss=f"{self.postfix['loss']:.3f}", refresh=False)
            self.bar.refresh()
        self._publish()

    # -- derived figures -----------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    @property
    def rate(self) -> float:
        return self.n / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def tok_s(self) -> float:
        return self.tokens / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        if not self.total or not self.n or self.rate <= 0:
            return None
        return max(self.total - self.n, 0) / self.rate

    def snapshot(self) -> dict[str, Any]:
        return {"desc": self.desc, "unit": self.unit, "n": self.n, "total": self.total,
                "elapsed_s": round(self.elapsed, 1), "rate": round(self.rate, 3),
                "tokens": self.tokens, "tok_s": round(self.tok_s, 1),
                "eta_s": None if self.eta is None else round(self.eta, 1), **self.postfix,
                "time": time.time()}

    def _publish(self, force: bool = False) -> None:
        if self.channel is None:
            return
        now = time.monotonic()
        if not force and now - self._last_write < self.interval and self.n != self.total:
            return
        self._last_write = now
        tmp = self.channel.with_name(f".{self.channel.name}.{os.getpid()}.tmp")
        try:
            self.channel.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.snapshot()))
            os.replace(tmp, self.channel)
        except OSError:  # progress is a convenience: never fail the work for it
            pass

    # -- context manager -----------------------------------------------------------------------
    def __enter__(self) -> Progress:
        self._publish(force=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._publish(force=True)
        if self.bar is not None:
            self.bar.close()


def progress_bar(total: int | None, desc: str, *, unit: str = "it") -> Progress:
    """A :class:`Progress` with a ``tqdm.auto`` bar (a widget in Jupyter, text elsewhere)."""
    from tqdm.auto import tqdm

    return Progress(total, desc, unit=unit, bar=tqdm(total=total, desc=desc, unit=unit))


def describe(snap: dict[str, Any]) -> str:
    """One concise line for a snapshot, e.g. ``phase 1: 120/480 samples · 71 tok/s · ETA 3m12s``."""
    total = snap.get("total")
    done = f"{snap.get('n', 0)}/{total}" if total else f"{snap.get('n', 0)}"
    parts = [f"{snap.get('desc', '')}: {done} {snap.get('unit', 'it')}"]
    if snap.get("tokens"):
        parts.append(f"{snap.get('tok_s', 0):.0f} tok/s")
    elif snap.get("rate"):
        parts.append(f"{snap['rate']:.2f} {snap.get('unit', 'it')}/s")
    if "loss" in snap:
        parts.append(f"loss {snap['loss']:.3f}")
    if "val_loss" in snap:
        parts.append(f"val {snap['val_loss']:.3f}")
    parts.append(f"elapsed {_fmt_duration(snap.get('elapsed_s'))}")
    if snap.get("eta_s") is not None and snap.get("n") != total:
        parts.append(f"ETA {_fmt_duration(snap['eta_s'])}")
    return " · ".join(parts)


class ProgressWatcher:
    """Print the snapshots a notebook's kernel writes to ``path`` while the notebook runs.

    On a terminal the line is rewritten in place; elsewhere (CI logs, files) a line is printed
    when the stage changes or at most every ``log_every`` seconds.
    """

    def __init__(self, path: Path, *, stream: TextIO | None = None, poll: float = 0.5,
                 log_every: float = 15.0, prefix: str = "    "):
        self.path, self.stream, self.poll, self.log_every, self.prefix = path, stream or sys.stdout, poll, \
            log_every, prefix
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: tuple[Any, ...] | None = None
        self._last_print = 0.0
        self._last_desc: str | None = None
        self._width = 0
        self.lines: list[str] = []

    def _read(self) -> dict[str, Any] | None:
        try:
            snap = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return snap if isinstance(snap, dict) else None

    def tick(self, final: bool = False) -> None:
        snap = self._read()
        if snap is None:
            return
        key = (snap.get("desc"), snap.get("n"), snap.get("total"))
        if key == self._last and not final:
            return
        now = time.monotonic()
        new_stage = snap.get("desc") != self._last_desc
        if self._last_desc is not None and new_stage and self.tty:
            self.stream.write("\n")
        line = self.prefix + describe(snap)
        if self.tty:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        elif new_stage or final or now - self._last_print >= self.log_every or snap.get("n") == snap.get("total"):
            if not (key == self._last):
                self.stream.write(line + "\n")
                self.lines.append(line)
            self._last_print = now
        else:
            return
        self.stream.flush()
        self._last, self._last_desc = key, snap.get("desc")

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            self.tick()

    def __enter__(self) -> ProgressWatcher:
        self.path.unlink(missing_ok=True)
        self._thread = threading.Thread(target=self._loop, name="lek-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.tick(final=True)
        if self.tty and self._last is not None:
            self.stream.write("\n")
            self.stream.flush()
        self.path.unlink(missing_ok=True)

