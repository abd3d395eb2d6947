"""Bad input gets a clear error that names the frame and the key."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator

from gapkit import GAP, SOAP, read_frames
from gapkit.data import LabelKeys, check_geometry, get_labels

from conftest import SMALL_SOAP


def labelled(atoms, energy=-1.0, forces=None):
    a = atoms.copy()
    f = np.zeros((len(a), 3)) if forces is None else forces
    a.calc = SinglePointCalculator(a, energy=energy, forces=f)
    return a


def test_missing_nan_and_misshaped_labels():
    w = molecule("H2O")
    no_e = w.copy()
    with pytest.raises(ValueError, match=r"frame 3: no energy label found under key 'energy'"):
        get_labels(no_e, index=3)
    a = w.copy()
    a.info["energy"] = -1.0
    with pytest.raises(ValueError, match=r"frame 0: no forces found under key 'forces'"):
        get_labels(a)
    nan = labelled(w, energy=np.nan)
    with pytest.raises(ValueError, match=r"frame 0: energy under key 'energy' contains NaN"):
        get_labels(nan)
    b = w.copy()
    b.info["my_E"] = -2.0
    b.arrays["my_F"] = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"forces under key 'my_F' has shape \(3, 2\), expected \(3, 3\)"):
        get_labels(b, LabelKeys(energy="my_E", forces="my_F"))
    b.arrays["my_F"] = np.ones((3, 3))
    lab = get_labels(b, LabelKeys(energy="my_E", forces="my_F"))
    assert lab.energy == -2.0 and lab.forces.sum() == 9


def test_fit_names_the_bad_frame(train_frames):
    frames = [labelled(a, a.get_potential_energy(), a.get_forces()) for a in train_frames[:4]]
    frames[2].calc = SinglePointCalculator(frames[2], energy=-1.0,
                                           forces=np.full((len(frames[2]), 3), np.nan))
    with pytest.raises(ValueError, match="frame 2: forces under key 'forces' contains NaN"):
        GAP(SOAP(**SMALL_SOAP)).fit(frames)


def test_bad_geometry():
    with pytest.raises(ValueError, match="atoms overlap"):
        check_geometry(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.01]]))
    with pytest.raises(ValueError, match="periodic cell is degenerate"):
        check_geometry(Atoms("H", cell=[[1, 0, 0], [2, 0, 0], [0, 0, 1]], pbc=True))
    with pytest.raises(ValueError, match="cell vectors have lengths"):
        check_geometry(Atoms("H", cell=[0, 0, 0], pbc=True))
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_geometry(Atoms("H", positions=[[np.nan, 0, 0]]))
    with pytest.raises(ValueError, match="no atoms"):
        check_geometry(Atoms())
    check_geometry(bulk("Si", "diamond", 5.43))  # a good primitive cell passes


def test_empty_and_unreadable_inputs(tmp_path, train_frames):
    with pytest.raises(ValueError, match="dataset is empty"):
        GAP().fit([])
    with pytest.raises(TypeError, match="expected ase.Atoms"):
        GAP().fit([1, 2])
    good = tmp_path / "good.xyz"
    from ase.io import write

    write(good, train_frames[:3])
    text = good.read_text().splitlines()
    trunc = tmp_path / "trunc.xyz"
    trunc.write_text("\n".join(text[: len(text) - 4]) + "\n")
    with pytest.raises(ValueError, match="truncated"):
        read_frames(trunc)
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    with pytest.raises(ValueError, match="Could not read|contains no structures"):
        read_frames(empty)
    with pytest.raises(FileNotFoundError, match="No such structure file"):
        read_frames(tmp_path / "nope.xyz")


def test_unknown_species_at_prediction(small_model):
    with pytest.raises(ValueError, match=r"species \['N'\] are not covered"):
        small_model.predict(molecule("NH3"))


def test_bad_hyperparameters():
    frames = [labelled(molecule("H2O"))]
    with pytest.raises(ValueError, match="energy_noise must be a positive number"):
        GAP(energy_noise=-1).fit(frames)
    with pytest.raises(ValueError, match="sparse_method must be one of"):
        GAP(sparse_method="kmeans").fit(frames)
    with pytest.raises(ValueError, match="delta must be 'auto' or a positive number"):
        GAP(delta="big").fit(frames)
    with pytest.raises(ValueError, match="n_sparse dict .* has no entry for"):
        GAP(SOAP(**SMALL_SOAP), n_sparse={"H": 3}).fit(frames)


def test_collinear_compositions_warn_about_lstsq_e0(train_frames):
    ethanol = [a for a in train_frames if len(a) == 9][:6]
    with pytest.warns(UserWarning, match="rank deficient.*e0='isolated'"):
        GAP(SOAP(**SMALL_SOAP), n_sparse=10, e0="lstsq").fit(ethanol)


# ---------------------------------------------------------------- nonsense settings (#13)
@pytest.mark.parametrize("kwargs,match", [
    (dict(n_sparse=0), r"n_sparse must be a positive integer \(sparse points per species\)"),
    (dict(n_sparse=-5), "n_sparse must be a positive integer"),
    (dict(n_sparse=2.5), "n_sparse must be a positive integer"),
    (dict(n_sparse={"C": 0, "H": 10, "O": 10}), r"n_sparse\['C'\] must be a positive integer"),
    (dict(n_sparse={"C": -1}), r"n_sparse\['C'\] must be a positive integer"),
    (dict(n_sparse={"Cx": 3}), "n_sparse dict: unknown chemical symbol"),
    (dict(n_sparse={}), "n_sparse dict is empty"),
    (dict(delta=np.inf), "delta must be 'auto' or a positive number"),
    (dict(delta=np.nan), "delta must be 'auto' or a positive number"),
    (dict(delta=1e300), r"delta must be .* no larger than 1e\+06, got 1e\+300"),
    (dict(delta=-1.0), "delta must be"),
    (dict(e0={"H": np.nan, "C": 0.0, "O": 0.0}), "e0 dict: E0 of H is nan"),
    (dict(e0={"Oxx": 1.0}), "e0 dict: unknown chemical symbol or atomic number 'Oxx'"),
    (dict(e0={"H": "a lot"}), "e0 dict: E0 of H is 'a lot'"),
    (dict(valid_fraction=0.0), r"valid_fraction must be a number between 0 and 1"),
    (dict(valid_fraction=1.0), "valid_fraction must be"),
    (dict(valid_fraction=-0.2), "valid_fraction must be"),
    (dict(force_std="slow"), "force_std must be 'fast' or 'exact', got 'slow'"),
    (dict(force_noise=np.float32(np.nan)), "force_noise must be a positive number"),
    (dict(zeta=True), "zeta must be a positive number, got True"),
    (dict(chunk_size=0), "chunk_size must be an integer >= 1"),
    (dict(virial_key="V", stress_key="S"), "give virial_key or stress_key, not both"),
])
def test_nonsense_settings_are_refused_before_fitting(kwargs, match):
    frames = [labelled(molecule("H2O"))]
    with pytest.raises(ValueError, match=match):
        GAP(SOAP(**SMALL_SOAP), **kwargs).fit(frames)


def test_term_n_sparse_is_checked():
    from gapkit import Term, TwoBody

    with pytest.raises(ValueError, match=r"term 0: n_sparse must be a positive integer"):
        GAP([Term(TwoBody(r_cut=4.0), n_sparse=0), Term(SOAP(**SMALL_SOAP))]).fit(
            [labelled(molecule("H2O"))])


def test_numpy_scalar_hyperparameters_are_accepted(train_frames):
    frames = train_frames[:6]
    model = GAP(SOAP(**SMALL_SOAP), n_sparse={"C": np.int32(10), "H": 10, "O": 10},
                zeta=np.float32(4), delta=np.float32(1.0), energy_noise=np.float32(0.001),
                force_noise=np.float64(0.02), virial_noise=np.float16(0.1),
                jitter=np.float32(1e-8), calibrate=False,
                e0={"H": np.float32(-13.6), "C": np.float64(-1000.0), "O": -2000}).fit(frames)
    assert np.all(np.isfinite(model.alpha_)) and model.delta_ == 1.0


def test_duplicate_frames_are_reported_and_never_duplicate_sparse_points(train_frames):
    from gapkit.gp.sparsify import select_from_frames

    base = train_frames[:8]
    frames = base + [labelled(a, a.get_potential_energy(), a.get_forces()) for a in base[:4]]
    with pytest.warns(UserWarning, match=r"4 training frame\(s\) repeat an earlier one.*"
                                         r"frames 0 and 8, 1 and 9, 2 and 10, 3 and 11"):
        GAP(SOAP(**SMALL_SOAP), n_sparse=15, calibrate=False, random_state=0).fit(frames)
    desc = SOAP(**SMALL_SOAP, species=["C", "H", "O"])
    for method in ("cur", "random", "fps"):
        Q, Z = select_from_frames(desc, frames, {1: 40, 6: 12, 8: 6}, method, random_state=1)
        assert len(np.unique(np.round(Q, 10), axis=0)) == len(Q), method
        assert [int(np.sum(Z == z)) for z in (1, 6, 8)] == [40, 12, 6], method
    # symmetric environments in one frame: all are kept only once
    Q, Z = select_from_frames(SOAP(**SMALL_SOAP, species=["Cu"]),
                              [bulk("Cu", "fcc", 3.6, cubic=True)], {29: 4})
    assert len(Q) == 1


def test_stress_in_other_units_is_caught_before_fitting(rng):
    from ase.units import GPa

    from conftest import SOAP_CU, emt_cu_frames

    for unit, factor in (("GPa", 1 / GPa), ("kbar", 10 / GPa), ("bar", 1e4 / GPa)):
        frames = emt_cu_frames(8, np.random.default_rng(3))
        for a in frames:
            a.calc.results["stress"] = a.calc.results["stress"] * factor
        with pytest.raises(ValueError, match=rf"look like stresses in other units.*median "
                                             rf"\|virial\|.*these look most like {unit}"):
            GAP(SOAP(**SOAP_CU), n_sparse=10, calibrate=False).fit(frames)
        GAP(SOAP(**SOAP_CU), n_sparse=10, calibrate=False, use_virials=False).fit(frames)


def test_virial_key_in_no_frame_is_an_error(rng):
    from conftest import SOAP_CU, emt_cu_frames

    frames = emt_cu_frames(4, rng)
    with pytest.raises(ValueError, match="virial_key 'REF_virial' is in no training frame"):
        GAP(SOAP(**SOAP_CU), n_sparse=5, calibrate=False, virial_key="REF_virial").fit(frames)


def test_round_off_negative_variances_are_clipped_silently():
    import warnings

    from gapkit.gp import solver

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = solver.clip_variance(np.array([1.0, -1e-16, -3e-13]), scale=np.ones(3))
    assert out.tolist() == [1.0, 0.0, 0.0]
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("default")
        for _ in range(5):  # five structures of one call
            solver.clip_variance(np.array([1.0, -1e-3]), "Nyström variance", scale=1.0)
    assert len(got) == 1 and "negative Nyström variance values beyond round-off" in str(got[0].message)
