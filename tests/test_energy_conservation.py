"""Energy conservation: the smooth (cosine) SOAP cutoff must give a continuous potential.

Two tiny GAPs are fitted on EMT-labelled, rattled 32-atom fcc Cu cells: one with the
smooth ``cutoff="cosine"`` (the default) and, as a control that proves the checks can
fail, one with DScribe's hard cutoff (``cutoff="dscribe"``). Both have the same
interaction range, 5.1 Å, the fourth neighbour shell of fcc Cu (a = 3.61 Å, 5.105 Å),
so that 12 neighbours per atom sit at the boundary and cross it all the time in MD.

* NVE velocity Verlet at high temperature: the smooth model's total energy only
  shows the bounded, smooth O(dt^2) oscillation of the integrator; the hard model's
  total energy jumps whenever a neighbour crosses the cutoff. DScribe's jumps are
  small (its cutoff sits where the Gaussian tail is 1e-3 of its peak): they raise the
  standard deviation of E_tot over 200 steps only ~2.5x, but the largest step-to-step
  change ~30x and the largest second difference of E_tot(t) (a kink detector: for a
  smooth trajectory it is O(dt^2) smaller than the step change) ~400x.
* A direct check: one atom moved radially across the cutoff of another by 2e-7 Å
  changes the energy by ~1e-12 eV with the cosine cutoff and by ~1e-5 eV with the
  hard one.

The time step is 0.5 fs rather than 2 fs: at 2 fs the integrator's own oscillation
of E_tot (std ~0.04 meV/atom here) is larger than the hard cutoff's jumps and the two
runs are hard to tell apart; at 0.5 fs the smooth run's oscillation is 16x smaller.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.verlet import VelocityVerlet

from gapkit import GAP, SOAP, GAPCalculator

RANGE = 5.1  # Å: interaction range of both models (fourth fcc Cu shell, 5.105 Å)
SIGMA = 0.3  # Å: atom Gaussian width (DScribe's padding 1.11 Å)
PADDING = SIGMA * np.sqrt(-2.0 * np.log(1e-3))  # DScribe's extension of r_cut


def _cu_cell(rattle: float = 0.0, seed: int = 0) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))  # 32 atoms
    if rattle:
        atoms.rattle(rattle, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def cu_models():
    frames = []
    for k in range(6):
        atoms = _cu_cell(rattle=0.15, seed=k)
        atoms.calc = EMT()
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
        frames.append(atoms)
    models = {}
    for cutoff, r_cut in (("cosine", RANGE), ("dscribe", RANGE - PADDING)):
        soap = SOAP(r_cut=r_cut, n_max=3, l_max=2, sigma=SIGMA, cutoff=cutoff, cutoff_width=1.0)
        models[cutoff] = GAP(soap, n_sparse=50, energy_noise=0.002, force_noise=0.05,
                             random_state=0).fit(frames)
        assert models[cutoff].descriptor_.interaction_range == pytest.approx(RANGE, abs=1e-9)
    return models


def _nve_total_energy(model, steps: int = 200, dt_fs: float = 0.5,
                      temperature: float = 2000.0, seed: int = 1) -> np.ndarray:
    """E_tot per atom (meV) after every velocity-Verlet step."""
    atoms = _cu_cell(rattle=0.02, seed=seed)
    m = atoms.get_masses()[:, None]
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((len(atoms), 3)) * np.sqrt(m * units.kB * temperature)
    p -= m * p.sum(axis=0) / m.sum()
    atoms.set_momenta(p)
    atoms.calc = GAPCalculator(model)
    etot = []
    dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    dyn.attach(lambda: etot.append(atoms.get_total_energy()), interval=1)
    dyn.run(steps)
    return np.asarray(etot) / len(atoms) * 1e3


def test_nve_energy_conserved_with_smooth_cutoff_not_with_hard(cu_models):
    smooth = _nve_total_energy(cu_models["cosine"])
    hard = _nve_total_energy(cu_models["dscribe"])
    s_std, h_std = smooth.std(), hard.std()
    s_jump, h_jump = np.abs(np.diff(smooth)).max(), np.abs(np.diff(hard)).max()
    s_kink, h_kink = np.abs(np.diff(smooth, 2)).max(), np.abs(np.diff(hard, 2)).max()
    info = (f"E_tot [meV/atom] std / max step / max 2nd difference: smooth {s_std:.3g} / "
            f"{s_jump:.3g} / {s_kink:.3g}, hard {h_std:.3g} / {h_jump:.3g} / {h_kink:.3g}")
    # measured: smooth std ~0.004-0.005, max step ~0.0006, max 2nd difference ~0.0001
    assert s_std < 0.015, info
    assert s_jump < 0.003, info
    assert s_kink < 0.001, info
    # control, DScribe's hard cutoff: std ~0.01, max step ~0.02, max 2nd difference ~0.03
    assert h_jump > 10 * s_jump, info
    assert h_kink > 30 * s_kink, info


@pytest.mark.parametrize("cutoff", ["cosine", "dscribe"])
def test_energy_continuous_across_cutoff(cu_models, cutoff):
    model = cu_models[cutoff]
    r_c = model.descriptor_.interaction_range
    h = 1e-7

    def trimer(r):  # atom 2 crosses the cutoff of atom 0 only (|r_2 - r_1| > r_c)
        return Atoms("Cu3", positions=[[0.0, 0.0, 0.0], [2.5, 0.0, 0.0], [0.0, r, 0.0]])

    pred = model.predict([trimer(r_c - h), trimer(r_c + h)])
    dE = abs(pred.energy[1] - pred.energy[0])
    dF = np.abs(pred.forces[1] - pred.forces[0]).max()
    if cutoff == "cosine":
        assert dE < 1e-8, f"energy jumps by {dE:.3g} eV across the cosine cutoff"
        assert dF < 1e-6, f"forces jump by {dF:.3g} eV/Å across the cosine cutoff"
    else:  # control: DScribe's cutoff is discontinuous (measured ~1e-5 eV)
        assert dE > 1e-6, f"expected a jump across the hard cutoff, got {dE:.3g} eV"
