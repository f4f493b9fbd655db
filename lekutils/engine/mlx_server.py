"""Start local ``mlx_lm.server`` processes (loopback) for tests, benchmarks and single-machine scale-out.

Each server is started through ``python -m lekutils exec`` so MLX runs on OpenBLAS (one BLAS thread
each, see :mod:`lekutils.core.blas`), not the reference BLAS a plain ``mlx_lm.server`` gets on Linux.
The process *is* the server (``exec`` replaces itself), so ``LocalServer.kill()`` is a real SIGKILL
of the server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = ["LocalServer", "free_port", "start_mlx_server"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class LocalServer:
    """A running ``mlx_lm.server``: its process, port, base URL (``.../v1``) and log file."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path | None
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the server (a crash) and reap it."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; close the log."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, n: int = 2000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _ready(url: str, model: str, timeout_s: float, proc: subprocess.Popen[bytes], warm: bool) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=httpx.Timeout(max(timeout_s, 1.0), connect=1.0), trust_env=False) as client:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlx_lm.server at {url} exited with code {proc.returncode} while starting")
            try:
                if client.get(url.removesuffix("/v1") + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlx_lm.server at {url} not ready after {timeout_s:.0f} s")
            time.sleep(0.1)
        if warm:  # the model loads on the first request: make it now, not during a measurement
            r = client.post(f"{url}/chat/completions", json={
                "model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "temperature": 0.0})
            r.raise_for_status()


def start_mlx_server(model_dir: str | os.PathLike[str], *, port: int | None = None, host: str = "127.0.0.1",
                     log_path: str | os.PathLike[str] | None = None, extra_args: Sequence[str] = (),
                     ready_timeout_s: float = 120.0, warm: bool = True) -> LocalServer:
    """Start ``mlx_lm.server --model model_dir`` on ``host:port`` (a free port by default) on OpenBLAS,
    wait until it answers (and, with ``warm``, has loaded the model); requests use model ``default_model``."""
    port = port or free_port(host)
    cmd = [sys.executable, "-m", "lekutils", "exec", sys.executable, "-m", "mlx_lm", "server",
           "--model", str(model_dir), "--host", host, "--port", str(port), "--log-level", "WARNING", *extra_args]
    log = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115 - closed by LocalServer.stop
    proc = subprocess.Popen(cmd, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    srv = LocalServer(proc, host, port, Path(log_path) if log_path is not None else None, log)
    try:
        _ready(srv.url, "default_model", ready_timeout_s, proc, warm)
    except BaseException:
        srv.stop()
        raise
    return srv
