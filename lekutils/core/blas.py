"""Run MLX on an optimized BLAS on Linux CPUs.

The ``mlx[cpu]`` wheel bundles the reference netlib BLAS (a 1024^3 float32 matmul runs at about
6 GFLOP/s on the 2-core machines here). Preloading OpenBLAS (PyPI packages ``ngsolve-openblas``
or ``cmeel-openblas``, which export the standard ``cblas_*`` symbols) makes float32 matmuls
7-50x faster. A library is used only after a child process has seen it compute on this CPU
(:func:`runs_here`): a build for another CPU type would kill the process with SIGILL. The preload
must be in the environment before the process starts, so entry points call
:func:`reexec_with_fast_blas` first thing; the notebook kernel spec carries :func:`blas_env`.

cmeel's ``libopenblas.so.0`` needs ``libgfortran.so.5``; wheels bundle that library under hashed
names (e.g. ``mlx_cpu.libs/libgfortran-<hash>.so.5.0.0``), so we link the bundled copies into a
small cache folder under their plain names and add it to ``LD_LIBRARY_PATH``.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import logging
import os
import subprocess
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


#: OpenBLAS builds looked for, best first: ``ngsolve-openblas`` (DYNAMIC_ARCH: a kernel for every
#: x86_64 CPU), ``cmeel-openblas`` (built for one CPU type: its 0.3.31 Linux wheel is SKYLAKEX only
#: and dies with SIGILL on AVX2-only CPUs such as AMD Zen 2/3), then Debian's (DYNAMIC_ARCH).
WHEEL_LIBS = ("ngsolve_openblas/libopenblasp-r*.so", "cmeel.prefix/lib/libopenblas.so.0")
SYSTEM_LIBS = ("/usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0", "/usr/lib/*-linux-gnu/libopenblas.so.0")

_PROBE = """
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
n = 64
A = (ctypes.c_float * (n * n))(*([1.0] * (n * n)))
C = (ctypes.c_float * (n * n))()
lib.cblas_sgemm(101, 111, 111, n, n, n, ctypes.c_float(1.0), A, n, A, n, ctypes.c_float(0.0), C, n)
sys.exit(0 if abs(C[0] - n) < 1e-3 and abs(C[n * n - 1] - n) < 1e-3 else 3)
"""


def candidates() -> list[Path]:
    """Every OpenBLAS library found, in order of preference (not yet checked to run on this CPU)."""
    found: list[Path] = []
    for pattern in WHEEL_LIBS:
        for site in _site_dirs():
            found.extend(Path(p) for p in sorted(glob.glob(str(site / pattern))))
    for pattern in SYSTEM_LIBS:
        found.extend(Path(p) for p in sorted(glob.glob(pattern)))
    return list(dict.fromkeys(found))


def _cpu_signature() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return "unknown"
    lines = [ln for ln in info.splitlines() if ln.startswith(("flags", "model name", "cpu family", "model\t"))]
    return hashlib.sha256("\n".join(dict.fromkeys(lines)).encode()).hexdigest()[:16]


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lekutils"


def runs_here(lib: Path) -> bool:
    """Whether ``lib`` computes a small sgemm correctly on this CPU, tried once in a child process
    (a build for another CPU type dies there with SIGILL, not here); the answer is cached per
    library file and CPU."""
    try:
        st = lib.resolve().stat()
    except OSError:
        return False
    key = f"{lib.resolve()}:{st.st_size}:{st.st_mtime_ns}:{_cpu_signature()}"
    cache = _cache_dir() / "blas-probe.json"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), bool):
        return known[key]
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    rt = None if str(lib).startswith("/usr/") else _runtime_dir()
    if rt is not None:
        env["LD_LIBRARY_PATH"] = ":".join(x for x in [str(rt), os.environ.get("LD_LIBRARY_PATH", "")] if x)
    env["OPENBLAS_NUM_THREADS"] = "1"
    try:
        ok = subprocess.run([sys.executable, "-I", "-c", _PROBE, str(lib)], env=env, timeout=60,
                            capture_output=True).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    if not ok:
        log.info("OpenBLAS at %s does not run on this CPU; skipped", lib)
    try:
        known = known if isinstance(known, dict) else {}
        known[key] = ok
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, cache)
    except OSError:
        pass
    return ok


@functools.lru_cache(maxsize=1)
def find_openblas() -> Path | None:
    """Path of an optimized OpenBLAS that runs on this CPU (see :data:`WHEEL_LIBS`), or None."""
    for lib in candidates():
        if runs_here(lib):
            return lib
    return None


def _runtime_dir() -> Path | None:
    """A folder holding ``libgfortran.so.5`` (and friends) linked from a wheel's bundled copies."""
    cache = _cache_dir() / "blas-runtime"
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
    pre = [x for x in os.environ.get("LD_PRELOAD", "").replace(":", " ").split() if x != str(lib)]
    env = {"LD_PRELOAD": " ".join([str(lib), *pre])}
    if not str(lib).startswith("/usr/"):  # a wheel's build: its libgfortran comes from another wheel
        rt = _runtime_dir()
        if rt is None:
            return {}
        rest = [x for x in os.environ.get("LD_LIBRARY_PATH", "").split(":") if x and x != str(rt)]
        env["LD_LIBRARY_PATH"] = ":".join([str(rt), *rest])
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


AUTO = "LEKUTILS_AUTO_BLAS"
HOW_TO = ("run scripts as `lek exec python your_script.py` (or `python -m lekutils exec python your_script.py`), "
          "Jupyter as `lek exec jupyter lab` or with the 'LEK workbook' kernel (`python -m lekutils kernelspec` "
          "installs it), or put `import lekutils` first in a script so it re-executes itself with OpenBLAS")


def _restartable() -> bool:
    """A plain ``python script.py`` / ``-m module`` / ``-c code`` run that can be started again as
    it was: not a REPL, not a Jupyter kernel, not pytest, not a script read from standard input."""
    argv = getattr(sys, "orig_argv", None)
    if not argv or len(argv) < 2 or sys.flags.interactive:
        return False
    if any(m in sys.modules for m in ("ipykernel", "IPython", "_pytest")):
        return False  # a kernel cannot restart itself; pytest has redirected the output (conftest re-execs)
    rest = [a for a in argv[1:] if not a.startswith("-X") and a not in ("-u", "-B", "-E", "-s", "-S", "-O", "-OO")]
    return bool(rest) and rest[0] != "-"


def ensure_fast_blas() -> str:
    """Called on ``import lekutils``: make MLX use OpenBLAS in this process where it can.

    A plain script run is re-executed once with OpenBLAS preloaded (before MLX computes anything;
    ``LEKUTILS_AUTO_BLAS=0`` turns this off); where that cannot be done (a REPL, a Jupyter kernel
    started without the workbook's kernel spec) a warning says exactly what to do. Returns
    ``"fast"``, ``"reexec"`` (never, in fact: the process is replaced), ``"warned"`` or ``"n/a"``.
    """
    if not reexec_needed():
        return "fast" if sys.platform.startswith("linux") and find_openblas() is not None else "n/a"
    if os.environ.get(AUTO, "1") != "0" and _restartable():
        reexec_with_fast_blas()
        return "reexec"
    import warnings

    warnings.warn(f"lekutils: MLX in this process runs on the reference BLAS, about 30x slower on Linux CPUs; "
                  f"{HOW_TO}", RuntimeWarning, stacklevel=3)
    return "warned"


def exec_with_fast_blas(command: list[str]) -> None:
    """Replace this process by ``command`` with OpenBLAS preloaded (``lek exec ...``)."""
    if not command:
        raise ValueError("no command given")
    env = {**os.environ, **blas_env()}
    if env.get("LD_PRELOAD"):
        env[_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(command[0], command, env)


def warn_if_reference() -> str:
    """Log a warning when MLX runs on the reference BLAS on Linux; return :func:`active_blas`."""
    which = active_blas()
    if which == "reference" and sys.platform.startswith("linux"):
        log.warning("MLX is using the reference BLAS (about 30x slower); %s", HOW_TO)
    return which


if __name__ == "__main__":  # `python -m lekutils.core.blas` prints the env lines for shells and Makefiles
    for k, v in blas_env().items():
        print(f"{k}={v}")
