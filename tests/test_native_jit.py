"""lekutils.core.jit: MLX's CPU JIT compiled with AVX2/FMA gives the same bits as without it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lekutils.core import jit

pytestmark = pytest.mark.skipif(not jit.supported(), reason="needs Linux x86_64 with AVX2+FMA and g++")

# Compiled (fused) kernels against the same ops run one by one by libmlx; prints one line per case.
_CHECK = r"""
import numpy as np
import mlx.core as mx, mlx.nn as nn
rng = np.random.default_rng(0)
a, b, c = (mx.array((rng.standard_normal((4096, 64)) * 3).astype(np.float32)) for _ in range(3))
cases = {
    "mul_add": lambda x, y, z: x * y + z,
    "poly": lambda x, y, z: (x * y + z) * x + y,
    "exp_diff": lambda x, y, z: mx.exp(x - mx.max(x, axis=-1, keepdims=True)),
    "silu_mul": lambda x, y, z: nn.silu(x) * y,
    "gelu_approx_mul": lambda x, y, z: nn.gelu_approx(x) * y,
    "sigmoid_tanh": lambda x, y, z: mx.sigmoid(x) + mx.tanh(y),
    "log_rsqrt_div": lambda x, y, z: mx.log(mx.abs(x) + 1) * mx.rsqrt(mx.abs(y) + 1) / (z + 10),
    "sin_cos_floor": lambda x, y, z: mx.sin(x * y) - mx.cos(z) + mx.floor(x * 7.3),
    "where_max": lambda x, y, z: mx.where(x > y, mx.maximum(x, z), mx.minimum(y, z) * 0.5),
}
for name, f in cases.items():
    got = np.array(mx.compile(f)(a, b, c))
    mx.disable_compile()
    want = np.array(f(a, b, c))
    mx.enable_compile()
    print(name, bool((got.view(np.int32) == want.view(np.int32)).all()))
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "XDG_CACHE_HOME": str(tmp_path / "cache"), **extra}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return env


def _run(code: str, env: dict[str, str]) -> dict[str, bool]:
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return {ln.split()[0]: ln.split()[1] == "True" for ln in out.stdout.splitlines() if ln.strip()}


def test_enable_puts_the_wrapper_first_and_renews_stale_kernels(tmp_path):
    env = _env(tmp_path)
    mlx_dir = tmp_path / "tmp" / "mlx"
    from importlib.metadata import version

    stale = mlx_dir / version("mlx") / "cpu"
    stale.mkdir(parents=True)
    (stale / "libOld_contiguous.so").write_bytes(b"old")
    code = ("import os, lekutils; from lekutils.core import jit; p = jit._wrapper_dir() / 'g++';"
            "print(jit.active(), os.environ['PATH'].split(os.pathsep)[0] == str(p.parent)); print(p.read_text())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("True True")
    assert "-mavx2 -mfma -ffp-contract=off" in out.stdout
    assert not (stale / "libOld_contiguous.so").exists()
    assert (stale / ".lekutils-jit-flags").read_text() == " ".join(jit.FLAGS)
    (stale / "libNew_contiguous.so").write_bytes(b"new")  # built with the flags: kept from now on
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=120)
    assert (stale / "libNew_contiguous.so").exists()


def test_fused_kernels_are_bit_identical_with_the_flags(tmp_path):
    got = _run("import lekutils\nfrom lekutils.core import jit\nassert jit.active()\n" + _CHECK, _env(tmp_path))
    assert got and all(got.values()), got
    libs = list((tmp_path / "tmp" / "mlx").rglob("lib*.so"))
    assert libs, "MLX compiled no kernel"


def test_without_fp_contract_off_the_fused_kernels_would_differ(tmp_path):
    """The reason for ``-ffp-contract=off``: g++ fuses ``x * y + z`` into one fma by default in C++."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "g++").write_text(f'#!/bin/sh\nexec "{jit._real_compiler()}" -mavx2 -mfma "$@"\n')
    (bin_dir / "g++").chmod(0o755)
    env = _env(tmp_path, LEKUTILS_NATIVE_JIT="0", PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    got = _run(_CHECK, env)
    assert got["exp_diff"] and not got["mul_add"]


def test_turned_off_and_unsupported(monkeypatch):
    monkeypatch.setenv(jit.DISABLE, "0")
    assert not jit.supported()
    monkeypatch.delenv(jit.DISABLE)
    monkeypatch.setattr(jit, "_cpu_flags", lambda: {"sse2"})
    assert not jit.supported()


def test_the_wrapper_adds_the_flags_to_mlx_builds_only(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    wrapper = jit._write_wrapper(jit._real_compiler()) / "g++"
    src = tmp_path / "tmp" / "mlx" / "0.0.0" / "cpu" / "kernel.cpp"
    src.parent.mkdir(parents=True)
    src.write_text("int x;\n")
    other = tmp_path / "ext.cpp"
    other.write_text("int x;\n")

    def macros(path: Path) -> str:
        return subprocess.run([str(wrapper), "-std=c++17", "-E", "-dM", str(path)], capture_output=True, text=True,
                              check=True, timeout=60).stdout

    assert "__AVX2__" in macros(src) and "__FMA__" in macros(src)
    assert "__AVX2__" not in macros(other)
