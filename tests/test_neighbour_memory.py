"""vesin's neighbour-list arrays without a ctypes type per call (gapkit.data._vesin_views):
the same arrays as vesin's own converter, and nothing kept per new pair count."""

import ctypes

import numpy as np
import pytest
from ase.build import bulk
from vesin import _neighbors

from gapkit.data import _vesin_views, geometry


def _rattled(seed, reps=(2, 2, 2)):
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(reps)
    atoms.positions += rng.normal(scale=0.2, size=atoms.positions.shape)
    return atoms


def _numpy_converter(ptr, shape, dtype, owner, device):  # vesin 0.6's own
    return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(dtype)), shape=shape)


def test_pointer_view_is_a_view_of_the_buffer():
    buf = (ctypes.c_double * 12)(*range(12))
    ptr = ctypes.cast(buf, ctypes.POINTER(ctypes.c_double))
    v = _vesin_views.pointer_view(ptr, (4, 3), ctypes.c_double)
    np.testing.assert_array_equal(v, np.arange(12.0).reshape(4, 3))
    assert v.dtype == np.float64 and v.flags.c_contiguous
    v[1, 2] = -1.0  # shares the memory, no copy
    assert buf[5] == -1.0
    idx = (ctypes.c_size_t * 4)(7, 8, 9, 10)
    w = _vesin_views.pointer_view(ctypes.cast(idx, ctypes.POINTER(ctypes.c_size_t)), (2, 2),
                                  ctypes.c_size_t)
    assert w.dtype == np.uint64 and w.tolist() == [[7, 8], [9, 10]]
    with pytest.raises(ValueError, match="null pointer"):
        _vesin_views.pointer_view(ctypes.POINTER(ctypes.c_double)(), (3,), ctypes.c_double)


def test_neighbour_lists_equal_vesins_converter(monkeypatch):
    frames = [_rattled(s) for s in range(3)]
    ours = [geometry._search(a, 4.0) for a in frames]
    monkeypatch.setattr(_neighbors, "_ptr_to_numpy", _numpy_converter)
    theirs = [geometry._search(a, 4.0) for a in frames]
    for a, b in zip(ours, theirs):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_no_ctypes_type_kept_per_pair_count():
    assert _vesin_views.install() and _neighbors._ptr_to_numpy is _vesin_views.pointer_view
    geometry._search(_rattled(0), 3.0)
    before = len(ctypes._pointer_type_cache)
    counts = set()
    for s in range(30):  # a different number of pairs nearly every time
        counts.add(len(geometry._search(_rattled(s), 3.0 + 0.05 * s)[0]))
    assert len(counts) > 20
    # vesin's np.ctypeslib.as_array made 4 pointer types per new count (~15 kB a call)
    assert len(ctypes._pointer_type_cache) == before
