"""lekutils: the logic behind the LEK curriculum workbook notebooks.

Importing it first in a script makes MLX use OpenBLAS on Linux (the script re-executes itself
once; see :func:`lekutils.core.blas.ensure_fast_blas`; ``LEKUTILS_AUTO_BLAS=0`` turns that off).
"""

__version__ = "0.1.0"

from lekutils.core.blas import ensure_fast_blas as _ensure_fast_blas

_ensure_fast_blas()
