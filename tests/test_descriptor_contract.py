"""The declared descriptor contract: one abstract base, one hook, one engine-result type."""

import pickle

import numpy as np
import pytest
from ase import Atoms
from sklearn.base import clone

import gapkit.descriptors as descriptors
from gapkit.descriptors import ACSF, SOAP, Descriptor, DescriptorSet, TwoBody
from gapkit.descriptors.base import Engine, EngineResult
from gapkit.descriptors.soap_dscribe import DScribeSOAPEngine
from gapkit.descriptors.soap_engine import SOAPEngine
from gapkit.descriptors.symmetry_functions import SymmetryFunctionEngine

from conftest import SMALL_SOAP

WATER = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
DESCRIPTORS = [SOAP(["H", "O"], **SMALL_SOAP),
               SOAP(["H", "O"], **SMALL_SOAP, cutoff="dscribe", backend="dscribe"),
               ACSF(["H", "O"], r_cut=4.0), TwoBody(["H", "O"], r_cut=4.0)]


def test_every_descriptor_class_subclasses_the_base():
    classes = [getattr(descriptors, n) for n in descriptors.__all__ if n != "DescriptorSet"]
    assert {c.__name__ for c in classes} == {"ACSF", "SOAP", "TwoBody"}
    for cls in classes:
        assert issubclass(cls, Descriptor)
    for engine in (SOAPEngine, DScribeSOAPEngine, SymmetryFunctionEngine):
        assert issubclass(engine, Engine)


def test_a_descriptor_without_the_hook_cannot_be_instantiated():
    class Incomplete(Descriptor):
        def __init__(self, species=None, r_cut=5.0):
            self.species = species
            self.r_cut = r_cut

    with pytest.raises(TypeError, match="_build_engine"):
        Incomplete(["H"])
    with pytest.raises(TypeError):
        Descriptor()

    class EngineWithoutCompute(Engine):
        n_features = 1

    with pytest.raises(TypeError, match="compute"):
        EngineWithoutCompute()


def test_a_minimal_descriptor_gets_the_whole_interface():
    """Only ``_build_engine``: compute, vjp_setup, normalisation, cache, validate, clone."""

    class Count(Engine):
        n_features = 1

        def compute(self, atoms, gradients=True, strain=False, keep=False):
            return EngineResult(p=np.ones((len(atoms), 1)), numbers=atoms.numbers.copy())

    class Constant(Descriptor):
        def __init__(self, species=None, r_cut=5.0):
            self.species = species
            self.r_cut = r_cut

        def _build_engine(self):
            return Count()

    d = Constant(["H", "O"])
    assert d.n_features == 1 and d.interaction_range == 5.0
    ds = d.compute(WATER, gradients=False)
    assert isinstance(ds, DescriptorSet) and np.all(ds.q == 1.0)
    assert clone(d).get_params() == d.get_params()
    with pytest.raises(ValueError, match="Constant.species is not set"):
        Constant().validate()
    with pytest.raises(ValueError, match="not covered"):
        Constant(["H"]).compute(WATER)
    _, vjp = d.vjp_setup(WATER)
    with pytest.raises(RuntimeError, match="keep=True"):
        vjp(np.ones((3, 1)))


@pytest.mark.parametrize("desc", DESCRIPTORS, ids=lambda d: f"{type(d).__name__}")
def test_shared_interface(desc):
    desc.validate()
    desc._validate()  # alias kept for gapkit.model.estimator
    engine = desc._engine
    assert desc._engine is engine  # cached
    assert isinstance(engine, Engine)
    res = engine.compute(WATER, gradients=True, strain=False)
    assert isinstance(res, EngineResult) and res.p.shape == (3, desc.n_features)
    ds = desc.compute(WATER)
    assert ds.q.shape == (3, desc.n_features) and ds.dq.shape[1:] == (3, desc.n_features)
    np.testing.assert_array_equal(desc.create(WATER), ds.q)
    q, vjp = desc.vjp_setup(WATER)
    np.testing.assert_allclose(q.q, ds.q, atol=1e-14)
    g = np.random.default_rng(0).normal(size=ds.q.shape)
    np.testing.assert_allclose(vjp(g)[0], ds.contract(g)[0], atol=1e-10)
    state = pickle.loads(pickle.dumps(desc))
    assert "_engine_cache" not in state.__dict__


def test_engine_result_vjp_needs_keep():
    res = SOAPEngine([1, 8], 4.0, 3, 2, 0.5).compute(WATER, gradients=False)
    with pytest.raises(RuntimeError, match="keep=True"):
        res.vjp(np.zeros_like(res.p))
