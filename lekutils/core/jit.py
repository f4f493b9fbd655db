"""MLX's CPU JIT (``mx.compile``) with the CPU's AVX2 and FMA units on x86_64 Linux, same bits.

MLX compiles the fused kernels of ``mx.compile`` on CPUs by writing C++ and running
``g++ -std=c++17 -O3 -Wall -fPIC -shared`` (``mlx/backend/cpu/jit_compiler.cpp``); it adds
``-mavx2 -mfma -mf16c`` only when MLX itself was built for AVX2, and the ``mlx[cpu]`` wheels for
x86_64 are not. So a compiled ``exp`` (six ``fma`` per value; also inside ``sigmoid``, ``silu``,
softmax) makes one libm ``fma`` call per step, one value at a time: ~14 ns per value on the 2-core
EPYC.

:func:`enable` puts a ``g++`` wrapper first on ``PATH`` (MLX finds the compiler there) that adds
:data:`FLAGS` where ``/proc/cpuinfo`` lists ``avx2`` and ``fma``. A compiled ``exp(x - m)`` then
costs ~0.8 ns per value (vectorised, 8 lanes; ~15 ns for ``mx.exp`` itself) and ``silu`` 2x less.
The results stay the same bit for bit:

- ``-ffp-contract=off``: g++ would otherwise fuse ``a * b + c`` of two separate ops into one ``fma``
  (contraction is its default in C++) and round once instead of twice;
- the kernels' own ``fma`` calls are correctly rounded in libm and in hardware alike;
- ``-fno-trapping-math`` only lets g++ if-convert the kernels' selects (so loops vectorise), and
  ``-fno-semantic-interposition -finline-limit=100000`` only let it inline MLX's ``simd::exp``:
  neither reorders nor re-rounds anything (no ``-ffast-math`` part that does).

``tests/test_native_jit.py`` compares fused kernels against the same ops run one by one (and shows
that without ``-ffp-contract=off`` they differ); the golden texts of tests/golden hold.

MLX caches compiled kernels by name in ``<tmp>/mlx/<version>/cpu``: kernels built before the
wrapper would be reused as they are (slow, same bits), so the folder is renewed once, marked with
the flags. ``LEKUTILS_NATIVE_JIT=0`` turns it all off.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
from pathlib import Path

log = logging.getLogger(__name__)

DISABLE = "LEKUTILS_NATIVE_JIT"
FLAGS = ("-mavx2", "-mfma", "-ffp-contract=off", "-fno-trapping-math", "-fno-semantic-interposition",
         "-finline-limit=100000")
_MARKER = ".lekutils-jit-flags"


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[-1].split())
    return set()


def supported() -> bool:
    """Linux on an x86_64 CPU with AVX2 and FMA, a ``g++`` on ``PATH``, and not turned off."""
    import platform

    return (os.environ.get(DISABLE, "1") != "0" and sys.platform.startswith("linux")
            and platform.machine().lower() in ("x86_64", "amd64") and {"avx2", "fma"} <= _cpu_flags()
            and _real_compiler() is not None)


def _wrapper_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lekutils"
    return base / "jit-bin"


def _real_compiler() -> str | None:
    """The first ``g++`` on ``PATH`` that is not this module's wrapper."""
    own = str(_wrapper_dir())  # and any other process's wrapper folder inherited through PATH
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and p != own and not p.endswith(os.path.join("lekutils", "jit-bin")))
    return shutil.which("g++", path=path)


def _tmp_dir() -> Path:
    """``std::filesystem::temp_directory_path()`` as libstdc++ resolves it."""
    for var in ("TMPDIR", "TMP", "TEMP", "TEMPDIR"):
        v = os.environ.get(var)
        if v:
            return Path(v)
    return Path("/tmp")


def mlx_cache_dir() -> Path | None:
    """MLX's folder of compiled CPU kernels for the installed version, or None without MLX."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("mlx")
    except PackageNotFoundError:
        return None
    return _tmp_dir() / "mlx" / v / "cpu"


def _write_wrapper(compiler: str) -> Path:
    d = _wrapper_dir()
    d.mkdir(parents=True, exist_ok=True)
    # only MLX's JIT builds (sources under <tmp>/mlx/<version>/cpu/) get the flags; anything else
    # this process starts (a pip build in a notebook) compiles as it would without the wrapper
    script = (f'#!/bin/sh\ncase "$*" in\n  */mlx/*/cpu/*) exec "{compiler}" {" ".join(FLAGS)} "$@" ;;\nesac\n'
              f'exec "{compiler}" "$@"\n')
    dst = d / "g++"
    try:
        if dst.read_text() == script and os.access(dst, os.X_OK):
            return d
    except OSError:
        pass
    tmp = d / f".g++.{os.getpid()}.tmp"
    tmp.write_text(script)
    tmp.chmod(0o755)
    os.replace(tmp, dst)
    return d


def _renew_cache(cache: Path) -> None:
    """Move aside kernels compiled without :data:`FLAGS`; mark the folder as built with them (under a
    lock beside it, so processes starting together renew it once)."""
    import fcntl

    stamp = " ".join(FLAGS)
    marker = cache / _MARKER

    def marked() -> bool:
        try:
            return marker.read_text() == stamp
        except OSError:
            return False

    if marked():
        return
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        lock = open(cache.parent / f".{cache.name}.lekutils.lock", "w")  # noqa: SIM115
    except OSError as e:
        log.debug("no lock beside %s: %s", cache, e)
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marked():
            _renew_locked(cache, marker, stamp)


def _renew_locked(cache: Path, marker: Path, stamp: str) -> None:
    if cache.is_dir() and any(cache.glob("lib*.so")):
        old = cache.with_name(f"{cache.name}.old-{os.getpid()}")
        try:
            os.replace(cache, old)  # processes that loaded a kernel keep their mapping
            shutil.rmtree(old, ignore_errors=True)
        except OSError as e:
            log.debug("could not renew %s: %s", cache, e)
            return
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f"{_MARKER}.{os.getpid()}.tmp"
        tmp.write_text(stamp)
        os.replace(tmp, marker)
    except OSError as e:
        log.debug("could not mark %s: %s", cache, e)


@functools.lru_cache(maxsize=1)
def enable() -> bool:
    """Make MLX's CPU JIT compile with :data:`FLAGS` in this process and its children; True if on."""
    if not supported():
        return False
    compiler = _real_compiler()
    assert compiler is not None
    try:
        d = _write_wrapper(compiler)
    except OSError as e:  # read-only home: MLX keeps its own flags
        log.debug("no JIT wrapper: %s", e)
        return False
    parts = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != str(d)]
    os.environ["PATH"] = os.pathsep.join([str(d), *parts])
    cache = mlx_cache_dir()
    if cache is not None:
        _renew_cache(cache)
    return True


def active() -> bool:
    """Whether this process compiles MLX kernels through the wrapper (``PATH`` starts with it)."""
    first = os.environ.get("PATH", "").split(os.pathsep)[0]
    return first == str(_wrapper_dir()) and (Path(first) / "g++").is_file()


def describe() -> str:
    """For run manifests: the flags MLX's CPU JIT gets in this process, or ``mlx default``."""
    return " ".join(FLAGS) if active() else "mlx default"
