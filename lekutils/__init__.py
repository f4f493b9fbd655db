"""lekutils: the logic behind the LEK curriculum workbook notebooks.

Importing it first in a script makes MLX use OpenBLAS on Linux (the script re-executes itself
once; see :func:`lekutils.core.blas.ensure_fast_blas`; ``LEKUTILS_AUTO_BLAS=0`` turns that off)
and MLX's CPU JIT compile with AVX2/FMA where the CPU has them, same bits
(:mod:`lekutils.core.jit`; ``LEKUTILS_NATIVE_JIT=0`` turns that off).
"""

__version__ = "0.1.0"

from lekutils.core.blas import ensure_fast_blas as _ensure_fast_blas
from lekutils.core.jit import enable as _enable_native_jit

_ensure_fast_blas()
_enable_native_jit()
