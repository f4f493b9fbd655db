"""Run MLX on an optimized BLAS on Linux CPUs.

The ``mlx[cpu]`` wheel bundles the reference netlib BLAS (a 1024^3 float32 matmul runs at about
6 GFLOP/s on the 2-core machines here). Preloading OpenBLAS (PyPI package ``cmeel-openblas``,
which exports the standard ``cblas_*`` symbols) makes float32 matmuls 30-50x faster. The preload
must be in the environment before the process starts, so entry points call
:func:`reexec_with_fast_blas` first thing; the notebook kernel spec carries :func:`blas_env`.

cmeel's ``libopenblas.so.0`` needs ``libgfortran.so.5``; wheels bundle that library under hashed
names (e.g. ``mlx_cpu.libs/libgfortran-<hash>.so.5.0.0``), so we link the bundled copies into a
small cache folder under their plain names and add it to ``LD_LIBRARY_PATH``.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
import sysconfig
from pathlib import Path

log = logging.getLogger(__name__)

_MARK = "LEKUTILS_BLAS_REEXEC"
DISABLE = "LEKUTILS_NO_FAST_BLAS"


def _site_dirs() -> list[Path]:
    dirs = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    dirs.update(p for p in sys.path if p.endswith("site-packages"))
    return [Path(d) for d in dirs if Path(d).is_dir()]


def find_openblas() -> Path | None:
    """Path of an optimized ``libopenblas.so.0`` (cmeel wheel, then Debian's), or None."""
    for site in _site_dirs():
        p = site / "cmeel.prefix" / "lib" / "libopenblas.so.0"
        if p.exists():
            return p
    for pattern in ("/usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0", "/usr/lib/*-linux-gnu/libopenblas.so.0"):
        hits = sorted(glob.glob(pattern))
        if hits:
            return Path(hits[0])
    return None


def _runtime_dir() -> Path | None:
    """A folder holding ``libgfortran.so.5`` (and friends) linked from a wheel's bundled copies."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lekutils" / "blas-runtime"
    for site in _site_dirs():
        for libs in ("mlx_cpu.libs", "numpy.libs", "scipy.libs"):
            gf = sorted((site / libs).glob("libgfortran-*.so.5*"))
            if not gf:
                continue
            cache.mkdir(parents=True, exist_ok=True)
            for f in (site / libs).iterdir():
                _link(cache / f.name, f)
            _link(cache / "libgfortran.so.5", gf[0])
            qm = sorted((site / libs).glob("libquadmath-*.so.0*"))
            if qm:
                _link(cache / "libquadmath.so.0", qm[0])
            return cache
    return None


def _link(dst: Path, src: Path) -> None:
    try:
        if dst.is_symlink() and os.readlink(dst) == str(src):
            return
        tmp = dst.with_name(dst.name + f".{os.getpid()}.tmp")
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(src)
        os.replace(tmp, dst)
    except OSError as e:  # read-only home etc.: fall back to reference BLAS
        log.debug("could not link %s -> %s: %s", dst, src, e)


def blas_env() -> dict[str, str]:
    """Environment variables that make a new process load OpenBLAS (empty off Linux or if none)."""
    if not sys.platform.startswith("linux") or os.environ.get(DISABLE):
        return {}
    lib = find_openblas()
    if lib is None:
        return {}
    env = {"LD_PRELOAD": " ".join(x for x in [str(lib), os.environ.get("LD_PRELOAD", "")] if x)}
    if "cmeel.prefix" in str(lib):
        rt = _runtime_dir()
        if rt is None:
            return {}
        env["LD_LIBRARY_PATH"] = ":".join(x for x in [str(rt), os.environ.get("LD_LIBRARY_PATH", "")] if x)
    # One BLAS thread unless the user says otherwise: OpenBLAS threads spin-wait, and with any other
    # busy process on the machine (a notebook kernel beside its runner, parallel tests) two threads
    # ran the engine 3.4x slower than one on the 2-core machines here.
    env["OPENBLAS_NUM_THREADS"] = os.environ.get("OPENBLAS_NUM_THREADS", "1")
    return env


def active_blas() -> str:
    """Which BLAS this process has mapped: ``openblas:<path>``, ``reference``, ``accelerate`` or ``n/a``."""
    if sys.platform == "darwin":
        return "accelerate"
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "n/a"
    for line in maps.splitlines():
        if "libopenblas" in line and "scipy_openblas" not in line and "numpy.libs" not in line:
            return "openblas:" + line.split()[-1]
    return "reference"


def reexec_needed() -> bool:
    """True when :func:`reexec_with_fast_blas` would re-execute this process."""
    if os.environ.get(_MARK) or os.environ.get(DISABLE) or not sys.platform.startswith("linux"):
        return False
    lib = find_openblas()
    return lib is not None and str(lib) not in os.environ.get("LD_PRELOAD", "")


def reexec_with_fast_blas() -> None:
    """Re-execute the current process with OpenBLAS preloaded, once, if not already active."""
    if not reexec_needed():
        if sys.platform.startswith("linux") and not os.environ.get(_MARK) and find_openblas() is None:
            log.warning("no optimized BLAS found: MLX float32 on CPU will be slow (pip install cmeel-openblas)")
        return
    env = blas_env()
    if not env:
        return
    new_env = {**os.environ, **env, _MARK: "1"}
    argv = [sys.executable] + (sys.orig_argv[1:] if hasattr(sys, "orig_argv") else sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, new_env)


def warn_if_reference() -> str:
    """Log a warning when MLX runs on the reference BLAS on Linux; return :func:`active_blas`."""
    which = active_blas()
    if which == "reference" and sys.platform.startswith("linux"):
        log.warning("MLX is using the reference BLAS (slow); run through `python -m lekutils` or set %s",
                    "LD_PRELOAD to an OpenBLAS")
    return which


if __name__ == "__main__":  # `python -m lekutils.core.blas` prints the env lines for shells and Makefiles
    for k, v in blas_env().items():
        print(f"{k}={v}")
