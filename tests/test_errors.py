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
