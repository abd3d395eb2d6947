"""The default model is SOAP with radial scaling + 2-body (``GAP(descriptor=None)``,
``gapkit fit``): its terms, the cutoff rule, save/load (files of the old, unscaled
default too), exact forces, and the CLI's ``--two-body`` and ``--radial-scaling``."""

import json
import warnings

import numpy as np
import pytest

from conftest import emt_cu_frames, finite_difference_forces, finite_difference_stress
from gapkit import GAP, SOAP, load
from gapkit.cli import main
from gapkit.cli.app import build_parser
from gapkit.cli.common import model_from_args
from gapkit.cli.config import resolve
from gapkit.descriptors import ACSF, TwoBody
from gapkit.gp.terms import (DEFAULT_RADIAL_SCALING, DEFAULT_RADIAL_SCALING_R0,
                              DEFAULT_TWO_BODY_SPARSE, Term, as_terms, default_soap,
                              default_terms)


def _fit(frames, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rank-deficient E0 of one molecule
        return GAP(n_sparse=20, random_state=0, calibrate=False, **kw).fit(frames)


@pytest.fixture(scope="module")
def default_model(train_frames):
    """The default descriptor (full default SOAP) on 8 ethanol frames."""
    return _fit(train_frames[:8])


def test_the_default_descriptor_is_soap_then_two_body():
    assert GAP().descriptor is None
    soap, pair = as_terms(None)
    assert type(soap.descriptor) is SOAP
    assert soap.descriptor.get_params() == SOAP(radial_scaling=4.0,
                                                radial_scaling_r0=2.0).get_params()
    assert (DEFAULT_RADIAL_SCALING, DEFAULT_RADIAL_SCALING_R0) == (4.0, 2.0)
    assert soap.zeta is None and soap.n_sparse is None  # the model's zeta and n_sparse
    assert type(pair.descriptor) is TwoBody and pair.zeta == 1
    assert pair.n_sparse == DEFAULT_TWO_BODY_SPARSE == 50
    assert pair.descriptor.r_cut == soap.descriptor.r_cut == 5.0


def test_only_the_default_model_has_radial_scaling():
    # SOAP() itself is DScribe's SOAP, without scaling, alone or in default_terms
    assert SOAP().radial_scaling == 0
    assert default_terms(SOAP())[0].descriptor.radial_scaling == 0
    # default_soap: the scaling with r0 = 2 Å whatever the cutoff; 0 is SOAP() exactly
    for r_cut in (4.0, 6.5):
        soap = default_soap(r_cut=r_cut)
        assert (soap.radial_scaling, soap.radial_scaling_r0, soap.r_cut) == (4.0, 2.0, r_cut)
    assert default_soap(r_cut=4.0, radial_scaling=0).get_params() == SOAP(r_cut=4.0).get_params()
    assert default_soap(radial_scaling=6, radial_scaling_r0=2.5).radial_scaling_r0 == 2.5
    for bad, match in (({"radial_scaling": -1}, "radial_scaling must be >= 0"),
                       ({"radial_scaling_r0": 0.0}, "radial_scaling_r0 must be > 0"),
                       ({"backend": "dscribe", "cutoff": "dscribe"},
                        "radial_scaling needs backend='engine'")):
        with pytest.raises(ValueError, match=match):
            default_soap(species=["H"], **bad).validate()


def test_a_term_without_descriptor_gets_the_default_soap(train_frames):
    from gapkit.model.training import fitted_descriptors
    (desc,) = fitted_descriptors([Term()], train_frames[:2])
    assert desc.get_params() == default_soap(species=["H", "C", "O"]).get_params()
    assert desc.radial_scaling == DEFAULT_RADIAL_SCALING


def test_the_default_scaling_changes_the_features(train_frames):
    atoms = train_frames[0]
    plain = SOAP(species=["H", "C", "O"]).compute(atoms).q
    scaled = default_soap(species=["H", "C", "O"]).compute(atoms).q
    assert plain.shape == scaled.shape and np.abs(plain - scaled).max() > 1e-2


def test_the_two_body_cutoff_and_species_follow_the_many_body_descriptor():
    soap = SOAP(species=["H", "O"], r_cut=6.5)
    many, pair = default_terms(soap)
    assert many.descriptor is soap
    assert pair.descriptor.r_cut == 6.5 and pair.descriptor.species == ["H", "O"]
    (only,) = default_terms(ACSF(r_cut=4.0), two_body=0)
    assert type(only.descriptor) is ACSF
    _, pair = default_terms(ACSF(r_cut=4.0), two_body=7)
    assert pair.descriptor.r_cut == 4.0 and pair.n_sparse == 7
    for bad in (-1, 2.5, True, "50"):
        with pytest.raises(ValueError, match="two_body must be a non-negative integer"):
            default_terms(two_body=bad)


def test_the_fitted_default_model_has_both_terms(default_model, train_frames):
    soap, pair = default_model.terms_
    assert (soap.descriptor.radial_scaling, soap.descriptor.radial_scaling_r0) == (4.0, 2.0)
    assert type(default_model.descriptor_) is SOAP and default_model.descriptor_ is soap.descriptor
    assert type(pair.descriptor) is TwoBody and pair.zeta == 1.0 and soap.zeta == 4.0
    assert pair.descriptor.r_cut == soap.descriptor.r_cut
    assert pair.descriptor.species == soap.descriptor.species == ["H", "C", "O"]
    assert len(default_model.alpha_) == len(default_model.sparse_species_) == pair.cols.stop
    assert soap.cols.stop == pair.cols.start
    # the 2-body term adds its own 50 (or all, for scarce species) points per species
    n_env = {z: sum(int(np.sum(a.numbers == z)) for a in train_frames[:8]) for z in (1, 6, 8)}
    for z in (1, 6, 8):
        assert 0 < int(np.sum(pair.sparse_species == z)) <= min(50, n_env[z])
    with pytest.raises(AttributeError, match=r"2 terms \(terms_\[0\]: SOAP .*TwoBody.*terms_\[t\]"):
        default_model.sparse_q_


def test_an_explicit_descriptor_is_used_alone(train_frames):
    model = _fit(train_frames[:6], descriptor=SOAP(r_cut=4.0, n_max=4, l_max=3))
    (term,) = model.terms_
    assert type(term.descriptor) is SOAP and model.sparse_q_.shape[0] == len(model.alpha_)
    assert term.descriptor.radial_scaling == 0  # as given: no scaling added


def _drop_radial_scaling_keys(path):
    """Rewrite a model file as a gapkit without radial scaling wrote it (no such keys)."""
    with np.load(path) as npz:
        arrays = dict(npz)
    meta = json.loads(arrays["__meta__"].tobytes().decode())
    for term in meta["terms"]:
        for key in ("radial_scaling", "radial_scaling_r0"):
            term["descriptor"]["params"].pop(key, None)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez_compressed(path, **arrays)


def test_a_model_of_the_old_unscaled_default_loads_and_predicts_the_same(
        train_frames, test_frames, tmp_path):
    """Files saved under the previous default (SOAP() + 2-body, no scaling; written
    before the scaling existed, without its keys) load as that model, not the new one."""
    old = _fit(train_frames[:6], descriptor=default_terms(SOAP(r_cut=4.0, n_max=4, l_max=3)))
    path = old.save(tmp_path / "old_default.npz")
    _drop_radial_scaling_keys(path)
    loaded = load(path)
    assert loaded.terms_[0].descriptor.radial_scaling == 0
    assert loaded.descriptor[0].descriptor.radial_scaling == 0  # a refit stays unscaled
    p, q = old.predict(test_frames[:2]), loaded.predict(test_frames[:2])
    np.testing.assert_allclose(q.energy, p.energy, rtol=0, atol=1e-10)
    for f, g in zip(p.forces, q.forces):
        np.testing.assert_allclose(g, f, rtol=0, atol=1e-10)


def test_the_default_model_saves_and_loads_equal(default_model, test_frames, tmp_path):
    path = default_model.save(tmp_path / "default.npz")
    loaded = load(path)
    assert [type(t.descriptor).__name__ for t in loaded.terms_] == ["SOAP", "TwoBody"]
    for a, b in zip(default_model.terms_, loaded.terms_):
        assert (a.zeta, a.weight, a.start) == (b.zeta, b.weight, b.start)
        np.testing.assert_array_equal(a.sparse_q, b.sparse_q)
        np.testing.assert_array_equal(a.sparse_species, b.sparse_species)
    np.testing.assert_array_equal(default_model.alpha_, loaded.alpha_)
    p, q = default_model.predict(test_frames[:3]), loaded.predict(test_frames[:3])
    np.testing.assert_allclose(q.energy, p.energy, rtol=0, atol=1e-10)
    for f, g in zip(p.forces, q.forces):
        np.testing.assert_allclose(g, f, rtol=0, atol=1e-10)
    # the loaded model keeps the term settings: a refit is the default model again
    soap, pair = loaded.descriptor
    assert pair.zeta == 1 and pair.n_sparse == 50 and soap.zeta is None
    assert (soap.descriptor.radial_scaling, soap.descriptor.radial_scaling_r0) == (4.0, 2.0)


def test_default_model_forces_are_minus_the_energy_gradient(default_model, test_frames):
    assert default_model.terms_[0].descriptor.radial_scaling == DEFAULT_RADIAL_SCALING
    atoms = test_frames[0]
    e_fn = lambda x: default_model.predict_structure(x, forces=False).energy
    got = default_model.predict_structure(atoms).forces
    np.testing.assert_allclose(got, finite_difference_forces(e_fn, atoms), atol=2e-6)


def test_default_model_forces_and_stress_on_a_periodic_cell(rng):
    frames = emt_cu_frames(8, rng)
    model = _fit(frames)
    assert [type(t.descriptor).__name__ for t in model.terms_] == ["SOAP", "TwoBody"]
    assert model.terms_[0].descriptor.radial_scaling == DEFAULT_RADIAL_SCALING
    atoms = frames[1].copy()
    atoms.positions += 0.05 * rng.normal(size=atoms.positions.shape)
    e_fn = lambda x: model.predict_structure(x, forces=False, stress=False).energy
    r = model.predict_structure(atoms, stress=True)
    np.testing.assert_allclose(r.forces, finite_difference_forces(e_fn, atoms), atol=2e-6)
    np.testing.assert_allclose(r.stress, finite_difference_stress(e_fn, atoms), atol=2e-6)


def _cli_model(*flags):
    return model_from_args(resolve(build_parser().parse_args(["fit", *flags])), "lstsq")


def test_cli_fit_defaults_to_two_body_and_two_body_0_turns_it_off(tmp_path):
    soap, pair = _cli_model("--r-cut", "4.5").descriptor
    assert type(soap.descriptor) is SOAP and soap.descriptor.r_cut == 4.5
    assert type(pair.descriptor) is TwoBody and pair.descriptor.r_cut == 4.5
    assert pair.zeta == 1 and pair.n_sparse == 50
    assert _cli_model("--two-body", "20").descriptor[1].n_sparse == 20
    off = _cli_model("--two-body", "0").descriptor
    assert type(off) is SOAP and off.r_cut == 5.0
    # a config file round-trips the setting
    cfg = tmp_path / "fit.json"
    cfg.write_text(json.dumps({"two_body": 0, "r_cut": 4.0}))
    assert type(_cli_model("--config", str(cfg)).descriptor) is SOAP
    cfg.write_text(json.dumps({"two_body": "12"}))
    assert _cli_model("--config", str(cfg)).descriptor[1].n_sparse == 12


def test_cli_dump_config_holds_the_two_body_default(capsys):
    assert main(["fit", "--dump-config"]) == 0
    assert json.loads(capsys.readouterr().out)["two_body"] == 50
    assert main(["fit", "--two-body", "0", "--dump-config"]) == 0
    assert json.loads(capsys.readouterr().out)["two_body"] == 0


def test_cli_radial_scaling_flags_and_config(tmp_path, capsys):
    soap = _cli_model("--r-cut", "6").descriptor[0].descriptor
    assert (soap.radial_scaling, soap.radial_scaling_r0, soap.r_cut) == (4.0, 2.0, 6.0)
    soap = _cli_model("--radial-scaling", "6", "--radial-scaling-r0", "2.5").descriptor[0]
    assert (soap.descriptor.radial_scaling, soap.descriptor.radial_scaling_r0) == (6.0, 2.5)
    off = _cli_model("--radial-scaling", "0", "--two-body", "0").descriptor
    assert off.get_params() == SOAP().get_params()  # 0: DScribe's plain SOAP
    # the resolved config holds the setting, and reading it back gives the same model
    assert main(["fit", "--radial-scaling", "3", "--dump-config"]) == 0
    dumped = json.loads(capsys.readouterr().out)
    assert (dumped["radial_scaling"], dumped["radial_scaling_r0"]) == (3.0, 2.0)
    cfg = tmp_path / "fit.json"
    cfg.write_text(json.dumps(dumped))
    assert _cli_model("--config", str(cfg)).descriptor[0].descriptor.radial_scaling == 3.0
    cfg.write_text(json.dumps({"radial_scaling": 0}))
    assert _cli_model("--config", str(cfg)).descriptor[0].descriptor.radial_scaling == 0
    cfg.write_text(json.dumps({"radial_scaling": "-2"}))
    with pytest.raises(ValueError, match="radial_scaling: expected a finite number >= 0"):
        _cli_model("--config", str(cfg))
    with pytest.raises(ValueError, match="--radial-scaling is SOAP's; ACSF has no radial"):
        _cli_model("--descriptor", "acsf", "--radial-scaling", "6")
    assert type(_cli_model("--descriptor", "acsf").descriptor[0].descriptor) is ACSF


@pytest.mark.parametrize("flags, message", [
    (["--radial-scaling", "-1"], "expected a finite number >= 0 (0: no radial scaling)"),
    (["--radial-scaling", "inf"], "expected a finite number >= 0"),
    (["--radial-scaling", "nan"], "expected a finite number >= 0"),
    (["--radial-scaling-r0", "0"], "expected a number > 0, got '0'")])
def test_cli_rejects_bad_radial_scaling(flags, message, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", *flags])
    assert message in capsys.readouterr().err


def test_cli_rejects_a_negative_two_body(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--two-body", "-3"])
    assert "expected an integer >= 0 (0: no 2-body term), got '-3'" in capsys.readouterr().err


def test_term_list_keeps_its_order(train_frames):
    """A user's own list is not reordered (only the default puts SOAP first)."""
    model = _fit(train_frames[:6], descriptor=[Term(TwoBody(r_cut=4.0), zeta=1, n_sparse=10),
                                               Term(SOAP(r_cut=4.0, n_max=3, l_max=2))])
    assert [type(t.descriptor).__name__ for t in model.terms_] == ["TwoBody", "SOAP"]
