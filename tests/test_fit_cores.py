"""The fit on several cores: GIL-free LAPACK calls, the dense phases with BLAS threads,
the side thread of K_MM and the variance basis (issue #17)."""

import numpy as np
import pytest
import scipy.linalg as sla
from scipy.linalg import lapack as sl

from gapkit.gp import lapack


def _tri(rng, n):
    return np.asfortranarray(np.triu(rng.standard_normal((n, n))) + 5 * np.eye(n))


@pytest.mark.parametrize("m, l", [(70, 0), (40, 40)])
def test_tpqrt_equals_scipy_bit_for_bit(m, l):
    rng = np.random.default_rng(0)
    n = 40
    a = _tri(rng, n)
    b = np.asfortranarray(np.triu(rng.standard_normal((m, n))) if l else rng.standard_normal((m, n)))
    ref = sl.dtpqrt(l, 16, a.copy(order="F"), b.copy(order="F"))[0]
    got = a.copy(order="F")
    assert lapack.tpqrt(got, b.copy(order="F"), l, 16) == 0
    assert np.array_equal(np.triu(got), np.triu(ref))


def test_tpqrt_rejects_c_order():
    a = np.zeros((3, 3))
    with pytest.raises(ValueError, match="Fortran-ordered float64"):
        lapack.tpqrt(a, np.zeros((2, 3), order="F"), 0, 1)


@pytest.mark.parametrize("lower", [True, False])
@pytest.mark.parametrize("trans", [True, False])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("k", [None, 1, 7])
def test_trsm_equals_solve_triangular(lower, trans, order, k):
    rng = np.random.default_rng(1)
    n = 30
    a = rng.standard_normal((n, n)) + 6 * np.eye(n)
    a = np.array(np.tril(a) if lower else np.triu(a), order=order)
    b = rng.standard_normal(n if k is None else (n, k))
    ref = sla.solve_triangular(a, b, lower=lower, trans="T" if trans else "N",
                               check_finite=False)
    got = lapack.trsm(a, b, lower=lower, trans=trans)
    assert got.shape == b.shape
    assert np.array_equal(got, ref)


def test_trsm_shape_errors():
    with pytest.raises(ValueError, match="must be square"):
        lapack.trsm(np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="do not match"):
        lapack.trsm(np.eye(3), np.zeros(2))
    with pytest.raises(np.linalg.LinAlgError, match="zero at diagonal 1"):
        lapack.trsm(np.diag([1.0, 0.0, 2.0]), np.ones(3))
