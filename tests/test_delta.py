"""Delta-learning: the GP learns reference minus baseline."""

import numpy as np
import pytest
from ase.calculators.emt import EMT

from gapkit import GAP, SOAP, load

from conftest import SOAP_CU, emt_cu_frames

def frames(n, seed=0):
    return emt_cu_frames(n, np.random.default_rng(seed), varied=False)


def test_baseline_equal_to_reference_gives_a_zero_gp(tmp_path):
    train = frames(6)
    model = GAP(SOAP(**SOAP_CU), n_sparse=20, baseline=EMT(), e0="zero").fit(train)
    assert np.abs(model.alpha_).max() < 1e-10
    test = frames(2, seed=1)
    pred = model.predict(test)
    for a, e, f, s in zip(test, pred.energy, pred.forces, pred.stress):
        assert e == pytest.approx(a.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(f, a.get_forces(), atol=1e-9)
        np.testing.assert_allclose(s, a.get_stress(), atol=1e-9)
    # a user calculator is recorded by name and must be given again
    path = model.save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"baseline calculator ase\.calculators\.emt\.EMT.*pass it again"):
        load(path)
    again = load(path, baseline=EMT())
    np.testing.assert_allclose(again.predict(test).energy, pred.energy, atol=1e-10)


def test_delta_learning_fits_the_residual():
    train, test = frames(10), frames(3, seed=2)
    plain = GAP(SOAP(**SOAP_CU), n_sparse=30, random_state=0).fit(train)
    delta = GAP(SOAP(**SOAP_CU), n_sparse=30, random_state=0, baseline=EMT()).fit(train)
    ref = np.concatenate([a.get_forces().ravel() for a in test])
    err_plain = np.abs(plain.predict(test).forces_flat.ravel() - ref).mean()
    err_delta = np.abs(delta.predict(test).forces_flat.ravel() - ref).mean()
    assert err_delta < 1e-6 < err_plain


class _OneAtATimeEMT(EMT):
    """EMT that records whether two threads were ever inside it at once."""

    def __init__(self):
        super().__init__()
        import threading
        self._lock = threading.Lock()
        self.overlaps = 0
        self.calls = 0

    def calculate(self, *args, **kwargs):
        import time
        if not self._lock.acquire(blocking=False):
            self.overlaps += 1
            self._lock.acquire()
        try:
            self.calls += 1
            time.sleep(0.002)  # widen the window a concurrent call would hit
            super().calculate(*args, **kwargs)
        finally:
            self._lock.release()


def test_the_baseline_is_never_called_from_two_threads_at_once():
    # tblite aborts the process (Fortran runtime error) when called concurrently, so the
    # threaded calibration must not share the baseline between its threads
    calc = _OneAtATimeEMT()
    model = GAP(SOAP(**SOAP_CU), n_sparse=20, random_state=0, baseline=calc,
                n_jobs=2).fit(frames(30))
    assert model.calibration_.calibrated
    assert calc.calls > 0 and calc.overlaps == 0
