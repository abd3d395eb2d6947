"""Restart files and the random stream of an active-learning run.

A run's ``workdir`` holds ``train.xyz`` (extxyz with the labels), ``model.npz``
(:func:`gapkit.save`, the model fitted on ``train.xyz``) and ``log.json`` (format
``gapkit-active-learning`` version 1: the counters, the random seed, the initial entry
and the log). :func:`write_state` writes them in that order, each atomically
(temporary file, then ``os.replace``); ``log.json`` comes last and is the commit
record: :func:`read_state` truncates ``train.xyz`` to its ``n_train`` frames if a
crash left extra frames and reuses ``model.npz`` when it matches (else the caller
refits). No pickle is involved.

Randomness follows gapkit's convention (:func:`gapkit.utils.check_random_state`): the
run has one integer seed, stored in ``log.json``, and iteration ``i`` (0: the first
fit) draws from its own ``RandomState`` (:func:`iteration_random_state`), so that a
resumed run continues the random stream of an uninterrupted one.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read, write

from gapkit.model import load
from gapkit.utils import atomic_write_bytes, check_random_state, to_jsonable

logger = logging.getLogger(__name__)

FORMAT = "gapkit-active-learning"
VERSION = 1
TRAIN_FILE = "train.xyz"
LOG_FILE = "log.json"
MODEL_FILE = "model.npz"


def open_workdir(workdir, restart: bool) -> tuple[Path | None, bool]:
    """The folder of a run and whether it holds a saved run.

    Parameters
    ----------
    workdir : path or None
        The run's folder (None: no restart files).
    restart : bool
        Whether the caller wants to resume a saved run.

    Returns
    -------
    workdir : Path or None
    has_state : bool
        True when ``workdir`` holds ``log.json`` (and ``restart`` is set).

    Raises
    ------
    ValueError
        If ``workdir`` is not a folder, or holds a run and ``restart`` is False.
    """
    wd = Path(workdir) if workdir is not None else None
    has_state = wd is not None and (wd / LOG_FILE).is_file()
    if wd is not None and wd.exists() and not wd.is_dir():
        raise ValueError(f"workdir '{wd}' exists and is not a folder")
    if has_state and not restart:
        raise ValueError(f"'{wd}' already holds an active-learning run ({LOG_FILE}); pass "
                         "restart=True to continue it, or choose another workdir")
    if restart and not has_state:
        logger.warning("no saved state in '%s': starting a fresh run", wd)
    return wd, has_state


def check_seed_argument(random_state) -> None:
    """Reject a ``random_state`` that :func:`run_seed` cannot use.

    Raises
    ------
    ValueError
        Unless ``random_state`` is None, an integer >= 0 or a numpy RandomState.
    """
    if random_state is None or isinstance(random_state, np.random.RandomState):
        return
    if not isinstance(random_state, (int, np.integer)):
        raise ValueError("random_state must be None, a non-negative integer or a "
                         f"numpy.random.RandomState, got {type(random_state).__name__}")
    if not isinstance(random_state, bool) and random_state < 0:
        raise ValueError(f"random_state must be a non-negative integer, got {random_state}")


def run_seed(random_state) -> int:
    """The integer seed of a run.

    Parameters
    ----------
    random_state : int, numpy.random.RandomState or None
        An int is the seed itself; a RandomState (or None: numpy's global one)
        draws it.

    Returns
    -------
    int
        The seed, >= 0.
    """
    if isinstance(random_state, (int, np.integer)):
        return int(random_state)
    return int(check_random_state(random_state).randint(2 ** 31 - 1))


def iteration_random_state(seed: int, iteration: int) -> np.random.RandomState:
    """The random stream of one iteration of the run with ``seed``.

    Parameters
    ----------
    seed : int
        The run's seed (:func:`run_seed`).
    iteration : int
        Iteration number (0 for the first fit).

    Returns
    -------
    numpy.random.RandomState
        Seeded from ``(seed, iteration)``: independent streams per iteration, the same
        for the same pair.
    """
    state = np.random.SeedSequence([int(seed), int(iteration)]).generate_state(1)[0]
    return check_random_state(int(state))


def write_state(workdir: Path, model, train: list[Atoms], state: dict) -> None:
    """Write the restart files of a run, each atomically, ``log.json`` last.

    Parameters
    ----------
    workdir : Path
        The run's folder (created if needed).
    model : GAP
        The model fitted on ``train``.
    train : list of ase.Atoms
        The labelled training set.
    state : dict
        The ``log.json`` record (made JSON-ready here).
    """
    buf = io.StringIO()
    write(buf, train, format="extxyz")
    atomic_write_bytes(workdir / TRAIN_FILE, buf.getvalue().encode("utf-8"))
    model.save(workdir / MODEL_FILE)
    payload = json.dumps(to_jsonable(state), indent=1)
    atomic_write_bytes(workdir / LOG_FILE, payload.encode("utf-8"))


def read_state(workdir: Path, model_template) -> tuple[dict, list[Atoms], object | None]:
    """Read the restart files of a run.

    Frames of ``train.xyz`` beyond the ``n_train`` of ``log.json`` (an iteration that
    crashed before its commit) are dropped with a warning.

    Parameters
    ----------
    workdir : Path
        The run's folder.
    model_template : GAP
        Its ``baseline`` is passed to :func:`gapkit.load`.

    Returns
    -------
    state : dict
        The ``log.json`` record.
    train : list of ase.Atoms
        The committed training set.
    fitted : GAP or None
        The saved model, or None when it is missing, unreadable or not fitted on
        ``train`` (then the caller refits; a warning says why).

    Raises
    ------
    ValueError
        If ``log.json`` or ``train.xyz`` cannot be read, is of another format, or
        ``train.xyz`` has fewer frames than recorded.
    """
    try:
        state = json.loads((workdir / LOG_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the active-learning state "
                         f"'{workdir / LOG_FILE}': {exc}") from exc
    if state.get("format") != FORMAT or state.get("version") != VERSION:
        raise ValueError(f"'{workdir / LOG_FILE}' is not a {FORMAT} v{VERSION} file "
                         f"(format={state.get('format')!r}, version={state.get('version')!r})")
    n_train = int(state["n_train"])
    try:
        train = read(str(workdir / TRAIN_FILE), index=":", format="extxyz")
    except Exception as exc:  # ASE raises many types for malformed files
        raise ValueError(f"cannot read '{workdir / TRAIN_FILE}': {exc}") from exc
    if len(train) < n_train:
        raise ValueError(f"'{workdir / TRAIN_FILE}' has {len(train)} frames but {LOG_FILE} "
                         f"records {n_train}: the restart files are inconsistent")
    if len(train) > n_train:
        logger.warning("discarding %d frame(s) of an unfinished iteration from '%s'",
                       len(train) - n_train, workdir / TRAIN_FILE)
        train = train[:n_train]
    return state, train, _saved_model(workdir / MODEL_FILE, model_template, n_train)


def _saved_model(path: Path, model_template, n_train: int):
    """The model saved at ``path`` if it was fitted on ``n_train`` structures, else None."""
    if not path.is_file():
        return None
    try:
        fitted = load(path, baseline=getattr(model_template, "baseline", None))
    except ValueError as exc:
        logger.warning("cannot reuse '%s' (%s); refitting", path, exc)
        return None
    info = getattr(fitted, "extra_", {}).get("active_learning", {})
    if info.get("n_train") != n_train:
        logger.warning("'%s' does not match the training set; refitting", path)
        return None
    return fitted
