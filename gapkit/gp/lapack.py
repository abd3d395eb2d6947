"""LAPACK/BLAS calls that release the GIL, for the threads of a fit.

scipy's ``scipy.linalg.lapack`` wrappers (f2py) hold the GIL for the whole Fortran
call: two threads of a fit that fold rows into their triangular factors
(``dtpqrt``) or solve triangular systems (``dtrtrs``) then run one at a time, and no
other thread runs Python meanwhile (measured: a Python thread made 12 % of its
progress while another ran scipy's ``dtpqrt``, against 49 % with this module on a
loaded 2-core machine). The functions here call the same LAPACK/BLAS routines of
scipy (through the function pointers that ``scipy.linalg.cython_lapack`` exports) with :mod:`ctypes`, which releases the GIL during the call.
Same routines, same arguments: the results equal scipy's bit for bit
(``tests/test_fit_cores.py``).
"""

from __future__ import annotations

import ctypes

import numpy as np
from scipy.linalg import cython_lapack

__all__ = ["tpqrt", "trsm", "lower_solve_lower"]

_INT = ctypes.c_int
_IP = ctypes.POINTER(_INT)
_DP = ctypes.c_void_p
_CP = ctypes.c_char_p


def _pointer(module, name: str) -> int:
    """Address of the routine ``name`` exported by a scipy Cython module."""
    capsule = module.__pyx_capi__[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return get(capsule, get_name(capsule))


# void dtpqrt(m, n, l, nb, a, lda, b, ldb, t, ldt, work, info)
_dtpqrt = ctypes.CFUNCTYPE(None, _IP, _IP, _IP, _IP, _DP, _IP, _DP, _IP, _DP, _IP, _DP, _IP)(
    _pointer(cython_lapack, "dtpqrt"))
# void dtrtrs(uplo, trans, diag, n, nrhs, a, lda, b, ldb, info)
_dtrtrs = ctypes.CFUNCTYPE(None, _CP, _CP, _CP, _IP, _IP, _DP, _IP, _DP, _IP, _IP)(
    _pointer(cython_lapack, "dtrtrs"))


def _ref(x: int):
    return ctypes.byref(_INT(int(x)))


def _check_f64(name: str, x: np.ndarray) -> None:
    if x.dtype != np.float64 or not x.flags.f_contiguous or not x.flags.writeable:
        raise ValueError(f"{name} must be a writeable Fortran-ordered float64 array")


def tpqrt(a: np.ndarray, b: np.ndarray, l: int, nb: int) -> int:
    """LAPACK ``dtpqrt`` in place, without the GIL: the R factor of ``[A; B]``.

    Parameters
    ----------
    a : ndarray of shape (n, n)
        Upper triangular, Fortran-ordered float64; overwritten by the R factor.
    b : ndarray of shape (m, n)
        Fortran-ordered float64, pentagonal with ``l`` upper-trapezoidal bottom rows
        (``l = 0``: dense; ``l = n = m``: upper triangular); overwritten.
    l : int
    nb : int
        Block size, ``1 <= nb <= n``.

    Returns
    -------
    int
        LAPACK's ``info`` (0 on success).
    """
    _check_f64("a", a)
    _check_f64("b", b)
    m, n = b.shape
    if a.shape != (n, n):
        raise ValueError(f"a has shape {a.shape}, expected ({n}, {n})")
    t = np.empty((nb, n), order="F")
    work = np.empty(nb * n)
    info = _INT(0)
    _dtpqrt(_ref(m), _ref(n), _ref(l), _ref(nb), a.ctypes.data, _ref(max(1, n)), b.ctypes.data,
            _ref(max(1, m)), t.ctypes.data, _ref(nb), work.ctypes.data, ctypes.byref(info))
    return int(info.value)


def trsm(a: np.ndarray, b: np.ndarray, lower: bool = False, trans: bool = False) -> np.ndarray:
    """``op(A)^-1 B`` for triangular ``A`` (LAPACK ``dtrtrs``, without the GIL), as
    ``scipy.linalg.solve_triangular(a, b, trans="T" if trans else "N", lower=lower,
    check_finite=False)`` (same routine and arguments: the same result).

    Parameters
    ----------
    a : ndarray of shape (n, n)
        Triangular (only the ``lower`` or upper triangle is read), C or Fortran order.
    b : ndarray of shape (n,) or (n, k)
    lower, trans : bool

    Returns
    -------
    ndarray of the shape of ``b`` (a new array).

    Raises
    ------
    numpy.linalg.LinAlgError
        When ``A`` has a zero on its diagonal.
    """
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"a must be square, got shape {a.shape}")
    if not a.flags.f_contiguous:
        if a.flags.c_contiguous:  # A^T in Fortran order: the transposed system
            a, lower, trans = a.T, not lower, not trans
        else:
            a = np.asfortranarray(a)
    b = np.asarray(b, dtype=np.float64)
    if b.shape[0] != a.shape[0]:
        raise ValueError(f"shapes {a.shape} and {b.shape} do not match")
    x = np.array(b.reshape(b.shape[0], -1), order="F", copy=True)
    n, k = x.shape
    if n and k:
        info = _INT(0)
        _dtrtrs(b"L" if lower else b"U", b"T" if trans else b"N", b"N", _ref(n), _ref(k),
                a.ctypes.data, _ref(n), x.ctypes.data, _ref(n), ctypes.byref(info))
        if info.value > 0:
            raise np.linalg.LinAlgError(f"singular matrix: zero at diagonal {info.value - 1}")
    return x.reshape(b.shape)


#: Columns per block of :func:`lower_solve_lower` (512-1024 took 0.65x the time of a
#: full solve for n = 3000 on one OpenBLAS thread; 256 was no faster than it).
TRI_BLOCK = 1024


def lower_solve_lower(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``A^-1 B`` for lower-triangular ``A`` and ``B`` (both (n, n)): lower triangular,
    by column blocks that solve only the trailing system below each block's first row
    (the rows above it are zero), about ``n**3 / 3`` flops instead of a full solve's
    ``n**3``. Only the lower triangle of ``b`` is read.

    Parameters
    ----------
    a, b : ndarray of shape (n, n)

    Returns
    -------
    ndarray of shape (n, n), Fortran order; zero above the diagonal.
    """
    n = a.shape[0]
    if a.shape != (n, n) or b.shape != (n, n):
        raise ValueError(f"a and b must be square and of one shape, got {a.shape}, {b.shape}")
    a = np.asfortranarray(a, dtype=np.float64)
    out = np.asfortranarray(np.tril(b), dtype=np.float64)
    info = _INT(0)
    for j0 in range(0, n, TRI_BLOCK):  # in place, on views (leading dimension n)
        off = 8 * (j0 + j0 * n)
        _dtrtrs(b"L", b"N", b"N", _ref(n - j0), _ref(min(TRI_BLOCK, n - j0)),
                a.ctypes.data + off, _ref(n), out.ctypes.data + off, _ref(n),
                ctypes.byref(info))
        if info.value > 0:
            raise np.linalg.LinAlgError(f"singular matrix: zero at diagonal "
                                        f"{j0 + info.value - 1}")
    return out
