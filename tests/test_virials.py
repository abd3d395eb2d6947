"""virial_noise='auto': force_noise x (V/N)^(1/3), and virials that do not hurt."""

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from gapkit import GAP, SOAP
from gapkit.cli import main
from gapkit.diagnostics.breakdown import frame_errors, group_metrics
from gapkit.model.params import auto_virial_noise


def _emt_cells(n, seed, a0=3.6, strain=0.03):
    """Strained, rattled 8-atom Cu cells labelled by EMT (energy, forces, stress)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        c = bulk("Cu", "fcc", a=a0, cubic=True).repeat((2, 1, 1))
        eps = rng.uniform(-strain, strain, (3, 3))
        c.set_cell(c.cell.array @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        c.positions += rng.normal(0, 0.06, c.positions.shape)
        c.calc = EMT()
        c.calc = SinglePointCalculator(c, energy=c.get_potential_energy(), forces=c.get_forces(),
                                       stress=c.get_stress())
        out.append(c)
    return out


def test_auto_virial_noise_is_force_noise_times_spacing():
    cells = _emt_cells(3, 0)
    lengths = [(c.get_volume() / len(c)) ** (1 / 3) for c in cells]
    assert auto_virial_noise(0.02, cells) == pytest.approx(0.02 * np.median(lengths))
    # molecules (not periodic) cannot carry virials and do not count
    assert auto_virial_noise(0.02, cells + [molecule("H2O")]) == pytest.approx(
        0.02 * np.median(lengths))
    assert auto_virial_noise(0.05, [molecule("H2O")]) == pytest.approx(0.05 * 2.5)


def test_fit_uses_auto_virial_noise_and_it_follows_force_noise():
    cells = _emt_cells(6, 1)
    spacing = np.median([(c.get_volume() / len(c)) ** (1 / 3) for c in cells])
    for sigma_f in (0.02, 0.05):
        m = GAP(SOAP(r_cut=3.5, n_max=3, l_max=2), n_sparse=10, force_noise=sigma_f,
                calibrate=False, random_state=0).fit(cells)
        noise = m.noise_.labelled()
        assert noise["virial"] == pytest.approx(sigma_f * spacing)
        assert noise["forces"] == pytest.approx(sigma_f)


def test_bad_virial_noise_raises():
    cells = _emt_cells(2, 2)
    with pytest.raises(ValueError, match=r"virial_noise must be 'auto' or a positive number "
                                         r"\(eV per sqrt\(atom\)\), got 'tight'"):
        GAP(virial_noise="tight").fit(cells)
    with pytest.raises(ValueError, match="virial_noise must be 'auto' or a positive number"):
        GAP(virial_noise=-0.1).fit(cells)


def test_cli_virial_noise_flag(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "x.xyz", "--virial-noise", "zero"])
    assert "expected 'auto' or a number, got 'zero'" in capsys.readouterr().err


def test_virials_at_auto_noise_help_stress_and_do_not_hurt():
    """EMT Cu cells: with virials at the default noise the stress error drops and the
    energy and force errors stay within 10 % of the fit without virials; a QUIP-style
    tight sigma_V = 0.001 eV/sqrt(atom) makes the forces clearly worse."""
    train, test = _emt_cells(24, 3), _emt_cells(12, 4)
    kw = dict(n_sparse=40, calibrate=False, random_state=0, delta=3.0)
    soap = SOAP(r_cut=4.0, n_max=4, l_max=3)

    def errors(**extra):
        m = GAP(soap, **kw, **extra).fit(train)
        return group_metrics(frame_errors(m.predict(test), test))

    base = errors(use_virials=False)
    auto = errors()
    tight = errors(virial_noise=0.001)
    assert auto["stress_mae"] < 0.8 * base["stress_mae"]
    assert auto["forces_mae"] < 1.1 * base["forces_mae"]
    assert auto["energy_mae_per_atom"] < 1.1 * base["energy_mae_per_atom"]
    assert tight["forces_mae"] > 1.1 * auto["forces_mae"]
