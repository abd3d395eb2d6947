"""Dask fit in chains of bounded tasks: frames loaded on the workers from a source,
one chunk per worker thread at a time, the serial model."""

import pickle
from collections import Counter

import numpy as np
import pytest
from ase.io import write

from gapkit import GAP, SOAP
from gapkit.data import LabelKeys, get_labels
from gapkit.data.sources import FileFrames, GeneratedFrames, source_of
from gapkit.gp import distributed as dist

from conftest import SMALL_SOAP

distributed = pytest.importorskip("dask.distributed")


def model(**kw):
    return GAP(SOAP(**SMALL_SOAP), n_sparse=40, random_state=0, chunk_size=4, calibrate=False, **kw)


@pytest.fixture(scope="module")
def xyz(train_frames, tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "train.xyz"
    write(path, train_frames[:24], format="extxyz")
    return path


def _client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                       dashboard_address=None)
    return cluster, distributed.Client(cluster)


def test_file_source_fit_equals_serial_and_holds_one_chunk_per_thread(xyz):
    src = FileFrames(xyz)
    assert len(src) == 24
    serial = model(n_jobs=1).fit(list(src))
    dist.live_chunks.reset()
    cluster, client = _client()
    with cluster, client:
        with distributed.get_task_stream(client) as stream:
            m = model().fit(src, client=client)
    prefixes = Counter(distributed.utils.key_split(t["key"]) for t in stream.data)
    np.testing.assert_allclose(m.alpha_, serial.alpha_, rtol=0, atol=1e-8 * np.abs(serial.alpha_).max())
    # one task per chain (two workers: two chains), none per chunk: a running chain
    # is never stolen, so its accumulator never moves between workers
    assert prefixes.get("run_chain") == 2 and "add_chunk" not in prefixes, prefixes
    stats = dist.live_chunks.stats()
    # every chunk went through a chain task, never more than one per worker thread
    # and never more than chunk_size structures in one (fails if tasks carry shares)
    assert stats["done"] == 6 and stats["live"] == 0
    assert 1 <= stats["peak"] <= 2
    assert stats["max_frames"] == 4


def test_chain_reports_its_factor_and_buffer_bytes_to_dask():
    """``dask.sizeof`` of a chain is its arrays' bytes (the worker's memory manager and
    the scheduler's transfer costs), not the few bytes of the Python object."""
    from dask.sizeof import sizeof

    from gapkit.gp.solver import RowAccumulator

    acc = RowAccumulator(50, block_rows=200)
    acc.add("forces", np.ones((10, 50)), np.ones(10), 1.0)
    chain = dist._Chain(spec=None, acc=acc)
    assert sizeof(chain) >= 200 * 51 * 8  # the row buffer
    acc.finalize()
    assert 51 * 51 * 8 <= sizeof(chain) < 200 * 51 * 8  # the factor; the buffer is released


def test_chunk_plan_carries_indices_not_structures(xyz):
    src = FileFrames(xyz)
    frames = list(src)
    found = source_of(frames[3:])
    assert found is not None and found[0] is src
    np.testing.assert_array_equal(found[1], np.arange(3, 24))
    labs = [get_labels(a, LabelKeys()) for a in frames]
    plan = dist.plan_chunks(frames, labs, np.zeros(24), 4, np.arange(24))
    shipped = len(pickle.dumps(plan))
    atoms = len(pickle.dumps(frames))
    assert shipped < 0.2 * atoms  # 24 Atoms pickle to ~60 kB; the refs to a few kB
    assert all(isinstance(c, dist.ChunkRef) and len(c) <= 4 for c in plan)
    assert len(pickle.dumps(src)) < 2000  # the source travels as a path and offsets


def _cell(k, seed=0, shift=0.0):
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng([seed, k])
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape) + shift
    atoms.calc = EMT()
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
    return atoms


def test_generated_source_must_match_the_client_frames():
    src = GeneratedFrames(_cell, 8, seed=1)
    src.attach(GeneratedFrames(_cell, 8, seed=1, shift=0.01).load(range(8)))  # not what workers make
    cluster, client = _client()
    with cluster, client, pytest.raises(ValueError, match="differs from the client's"):
        GAP(SOAP(species=["Cu"], r_cut=3.0, n_max=3, l_max=2), n_sparse=8, random_state=0,
            chunk_size=4, use_virials=False, calibrate=False).fit(src, client=client)


def test_sources_reject_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such structure file"):
        FileFrames(tmp_path / "missing.xyz")
    bad = tmp_path / "bad.xyz"
    bad.write_text("not a count\nx\n")
    with pytest.raises(ValueError, match="atom count"):
        FileFrames(bad)
    with pytest.raises(ValueError, match="n must be at least 1"):
        GeneratedFrames(_cell, 0)
    with pytest.raises(ValueError, match="3 frames given to a source of 8"):
        GeneratedFrames(_cell, 8).attach([_cell(0)] * 3)
    with pytest.raises(IndexError, match="outside a source of 8"):
        GeneratedFrames(_cell, 8).load([8])
