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

__all__ = ["tpqrt", "tpqrt_threads", "staircase_qr", "trsm", "lower_solve_lower"]

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
# void dtpqrt2(m, n, l, a, lda, b, ldb, t, ldt, info)
_dtpqrt2 = ctypes.CFUNCTYPE(None, _IP, _IP, _IP, _DP, _IP, _DP, _IP, _DP, _IP, _IP)(
    _pointer(cython_lapack, "dtpqrt2"))
# void dtprfb(side, trans, direct, storev, m, n, k, l, v, ldv, t, ldt, a, lda, b, ldb,
#             work, ldwork)
_dtprfb = ctypes.CFUNCTYPE(None, _CP, _CP, _CP, _CP, _IP, _IP, _IP, _IP, _DP, _IP, _DP, _IP,
                           _DP, _IP, _DP, _IP, _DP, _IP)(_pointer(cython_lapack, "dtprfb"))
# void dgeqrf(m, n, a, lda, tau, work, lwork, info)
_dgeqrf = ctypes.CFUNCTYPE(None, _IP, _IP, _DP, _IP, _DP, _DP, _IP, _IP)(
    _pointer(cython_lapack, "dgeqrf"))
# void dormqr(side, trans, m, n, k, a, lda, tau, c, ldc, work, lwork, info)
_dormqr = ctypes.CFUNCTYPE(None, _CP, _CP, _IP, _IP, _IP, _DP, _IP, _DP, _DP, _IP, _DP, _IP,
                           _IP)(_pointer(cython_lapack, "dormqr"))
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


#: Cost of factoring one panel (``dtpqrt2``, level-2 BLAS) in columns of the trailing
#: update (``dtprfb``) of the same panel: the share of the thread that factors the
#: next panel is smaller by this many columns (measured ~2-3 on one OpenBLAS thread).
PANEL_COST = 2.5
#: Column ranges of a threaded update start on multiples of this (rounded to a multiple
#: of the panel width) from the first trailing column, so that each column falls in
#: the same BLAS kernel block as in one call on all trailing columns (unaligned cuts
#: changed the last bit).
ALIGN = 64


def tpqrt_threads(a: np.ndarray, b: np.ndarray, l: int, nb: int, threads: int = 2) -> int:
    """:func:`tpqrt` on ``threads`` threads: the blocked loop of LAPACK ``dtpqrt``
    written out (per panel of ``nb`` columns: ``dtpqrt2``, then ``dtprfb`` on the
    trailing columns), with the trailing update split into column ranges, one per
    thread, and a look-ahead: the calling thread first updates and factors the next
    panel, then its share, while the others update theirs (every call without the
    GIL). Each column sees the same operations in the same order as in ``dtpqrt``
    (the update of a column does not depend on the others), so the result equals
    :func:`tpqrt`'s to round-off (``tests/test_fit_cores.py``). Bit for bit only where
    the BLAS runs a split column range through the same kernel path as the whole (not
    on an AMD EPYC with OpenBLAS 0.3.31: ~1e-15 of the largest entry apart).

    Parameters
    ----------
    a, b, l, nb
        As for :func:`tpqrt` (``a`` (n, n) and ``b`` (m, n) overwritten).
    threads : int
        Threads; 1 (or a small ``n``) calls :func:`tpqrt`.

    Returns
    -------
    int
        ``info`` (0 on success).
    """
    _check_f64("a", a)
    _check_f64("b", b)
    m, n = b.shape
    if a.shape != (n, n):
        raise ValueError(f"a has shape {a.shape}, expected ({n}, {n})")
    if threads <= 1 or n < 4 * nb or not 1 <= nb <= n:
        return tpqrt(a, b, l, nb)
    from concurrent.futures import ThreadPoolExecutor

    lda, ldb = max(1, n), max(1, m)
    t = np.empty((nb, n), order="F")
    works = [np.empty(nb * n) for _ in range(threads)]
    pa, pb, pt = a.ctypes.data, b.ctypes.data, t.ctypes.data
    info = _INT(0)

    def dims(i):  # LAPACK dtpqrt's IB, MB and LB of the panel at column i (0-based)
        ib = min(n - i, nb)
        mb = min(m - l + i + ib, m)
        return ib, mb, (0 if i + 1 >= l else mb - m + l - i)

    def factor(i):
        ib, mb, lb = dims(i)
        _dtpqrt2(_ref(mb), _ref(ib), _ref(lb), pa + 8 * (i + i * lda), _ref(lda),
                 pb + 8 * i * ldb, _ref(ldb), pt + 8 * i * nb, _ref(nb), ctypes.byref(info))
        return int(info.value)

    def update(i, c0, c1, work):  # panel i's reflectors applied to columns [c0, c1)
        if c1 <= c0:
            return
        ib, mb, lb = dims(i)
        _dtprfb(b"L", b"T", b"F", b"C", _ref(mb), _ref(c1 - c0), _ref(ib), _ref(lb),
                pb + 8 * i * ldb, _ref(ldb), pt + 8 * i * nb, _ref(nb),
                pa + 8 * (i + c0 * lda), _ref(lda), pb + 8 * c0 * ldb, _ref(ldb),
                work.ctypes.data, _ref(ib))

    if factor(0):
        return int(info.value)
    with ThreadPoolExecutor(threads - 1) as pool:
        for i in range(0, n, nb):
            lo = i + nb  # first trailing column (the next panel's)
            if lo >= n:
                break
            nxt = min(lo + nb, n)
            # split what follows the next panel so that every thread has about the same
            # work; the calling thread's share is smaller by the next panel's update and
            # factorisation
            rest = n - nxt
            lead = max(0, int((rest + (nxt - lo) * (1 + PANEL_COST)) / threads
                              - (nxt - lo) * (1 + PANEL_COST)))
            # cuts on multiples of ALIGN columns from ``lo``: each column then falls in
            # the same BLAS kernel block as in one call on all trailing columns
            step = nb * max(1, ALIGN // nb)
            bounds = [min(n, max(nxt, lo + step * round((c - lo) / step)))
                      for c in np.linspace(min(nxt + lead, n), n, threads)[:-1]] + [n]
            futs = [pool.submit(update, i, bounds[k], bounds[k + 1], works[k + 1])
                    for k in range(threads - 1)]
            update(i, lo, nxt, works[0])
            bad = factor(lo)
            update(i, nxt, bounds[0], works[0])
            for f in futs:
                f.result()
            if bad:
                return bad
    return 0


def staircase_qr(x: np.ndarray, depth: np.ndarray, nb: int = 64, threads: int = 1) -> int:
    """Householder QR in place of a *staircase* matrix: column ``k`` of ``x`` is zero
    below row ``depth[k] - 1`` and ``depth`` is nondecreasing with ``depth[k] > k``
    (the columns of an upper-triangular factor picked in ascending order, with
    ``depth[k]`` = the picked column's index + 1). Per panel of ``nb`` columns LAPACK
    ``dgeqrf`` runs on the panel's rows ``[j, depth[j + nb - 1])`` only and ``dormqr``
    applies its reflectors to those rows of the trailing columns (every call without
    the GIL), so the zeros below the staircase are never touched and never filled:
    about ``2 b n**2`` flops for ``n`` columns and a staircase ``b = max(depth[k] - k)``
    deep, instead of the dense QR's ``2 m n**2 - 2 n**3 / 3``.

    Parameters
    ----------
    x : ndarray of shape (m, n)
        Fortran-ordered float64, ``m >= n``; on return its upper triangle of the first
        ``n`` rows is the R factor (the rest holds reflectors: ignore it).
    depth : ndarray of int, shape (n,)
    nb : int
        Panel width.
    threads : int
        Threads applying each panel's reflectors, split by trailing columns (each
        column sees the same operations: the result does not depend on it beyond the
        blocking of the BLAS kernels).

    Returns
    -------
    int
        ``info`` of the first failing call (0 on success).
    """
    _check_f64("x", x)
    m, n = x.shape
    depth = np.minimum(np.asarray(depth, dtype=np.int64), m)
    if depth.shape != (n,) or m < n:
        raise ValueError(f"depth must have one entry per column of x ({n}) and x at least as "
                         f"many rows as columns, got {depth.shape} for x of shape {x.shape}")
    if n and (np.any(np.diff(depth) < 0) or np.any(depth <= np.arange(n))):
        raise ValueError("depth must be nondecreasing with depth[k] > k (a staircase)")
    nb = max(1, min(int(nb), n)) if n else 1
    ld, px = max(1, m), x.ctypes.data
    tau = np.empty(max(1, n))
    pw = [np.empty((n + 65) * 64) for _ in range(max(1, threads))]
    info = _INT(0)

    def panel(j):  # dgeqrf of columns [j, j + ib) on rows [j, depth)
        ib = min(nb, n - j)
        h = int(depth[j + ib - 1])
        _dgeqrf(_ref(h - j), _ref(ib), px + 8 * (j + j * ld), _ref(ld),
                tau.ctypes.data + 8 * j, pw[0].ctypes.data, _ref(len(pw[0])),
                ctypes.byref(info))
        return int(info.value)

    def reflectors(j):  # a private copy of panel j's reflectors and their tau
        ib = min(nb, n - j)
        return np.asfortranarray(x[j:int(depth[j + ib - 1]), j:j + ib]), tau[j:j + ib].copy()

    def update(j, c0, c1, work, own=None):  # panel j's reflectors applied to [c0, c1)
        if c1 <= c0:
            return 0
        ib = min(nb, n - j)
        h = int(depth[j + ib - 1])
        # LAPACK dorm2r sets each reflector's diagonal entry to 1 while it applies it and
        # then restores it: threads sharing one panel would race on those entries (and
        # leave 1.0 on R's diagonal), so every thread but the caller reads its own copy
        pv, ldv, pt = ((own[0].ctypes.data, max(1, h - j), own[1].ctypes.data) if own
                       else (px + 8 * (j + j * ld), ld, tau.ctypes.data + 8 * j))
        inf = _INT(0)
        _dormqr(b"L", b"T", _ref(h - j), _ref(c1 - c0), _ref(ib), pv, _ref(ldv), pt,
                px + 8 * (j + c0 * ld), _ref(ld), work.ctypes.data, _ref(len(work)),
                ctypes.byref(inf))
        return int(inf.value)

    if not n or panel(0):
        return int(info.value)
    pool = None
    if threads > 1 and n >= 4 * nb:
        from concurrent.futures import ThreadPoolExecutor
        pool = ThreadPoolExecutor(threads - 1)
    try:
        for j in range(0, n, nb):
            lo = j + nb
            if lo >= n:
                break
            nxt = min(lo + nb, n)
            if pool is None:
                bad = update(j, lo, n, pw[0]) or panel(lo)
            else:  # look-ahead: the next panel first, the rest split between threads
                cuts = [int(c) for c in np.linspace(nxt, n, threads + 1)]
                futs = [pool.submit(update, j, cuts[k], cuts[k + 1], pw[k], reflectors(j))
                        for k in range(1, threads)]
                bad = update(j, lo, nxt, pw[0]) or panel(lo) or update(j, nxt, cuts[1], pw[0])
                done = [f.result() for f in futs]
                bad = bad or next((r for r in done if r), 0)
            if bad:
                return bad
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    return 0


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


def lower_solve_lower(a: np.ndarray, b: np.ndarray, threads: int = 1) -> np.ndarray:
    """``A^-1 B`` for lower-triangular ``A`` and ``B`` (both (n, n)): lower triangular,
    by column blocks that solve only the trailing system below each block's first row
    (the rows above it are zero), about ``n**3 / 3`` flops instead of a full solve's
    ``n**3``. Only the lower triangle of ``b`` is read.

    Parameters
    ----------
    a, b : ndarray of shape (n, n)
    threads : int
        Threads solving the column blocks (independent: the same calls, so the same
        result bit for bit), the largest first.

    Returns
    -------
    ndarray of shape (n, n), Fortran order; zero above the diagonal.
    """
    n = a.shape[0]
    if a.shape != (n, n) or b.shape != (n, n):
        raise ValueError(f"a and b must be square and of one shape, got {a.shape}, {b.shape}")
    a = np.asfortranarray(a, dtype=np.float64)
    out = np.asfortranarray(np.tril(b), dtype=np.float64)

    def block(j0):  # in place, on views (leading dimension n)
        info = _INT(0)
        off = 8 * (j0 + j0 * n)
        _dtrtrs(b"L", b"N", b"N", _ref(n - j0), _ref(min(TRI_BLOCK, n - j0)),
                a.ctypes.data + off, _ref(n), out.ctypes.data + off, _ref(n),
                ctypes.byref(info))
        return j0 + info.value - 1 if info.value > 0 else -1

    starts = range(0, n, TRI_BLOCK)
    if threads > 1 and len(starts) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(threads, len(starts))) as pool:
            bad = [k for k in pool.map(block, starts) if k >= 0]
    else:
        bad = []
        for j0 in starts:
            k = block(j0)
            if k >= 0:
                bad.append(k)
                break
    if bad:
        raise np.linalg.LinAlgError(f"singular matrix: zero at diagonal {min(bad)}")
    return out
