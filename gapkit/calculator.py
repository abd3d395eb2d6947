"""ASE calculator for a fitted GAP, with uncertainties and extrapolation flags.

Forces are the exact negative gradient of the GAP energy: with local energies
``eps_i = delta**2 sum_m alpha_m (q_i . q_m)**zeta`` and ``E = sum_i (E0[Z_i] + eps_i)``,

    F_j = -dE/dr_j = -sum_i (d eps_i / d q_i) . (d q_i / d r_j),

where the sum runs over the centres ``i`` within the cutoff of atom ``j`` (and
``j`` itself). The stress is ``(1/V) dE/deta`` for a homogeneous strain ``eta``,
symmetrised, in ASE's Voigt order (xx, yy, zz, yz, xz, xy) and eV/Å³.
"""

from __future__ import annotations

import logging

import numpy as np
from ase import outputs
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from sklearn.utils.validation import check_is_fitted

from gapkit.uncertainty.flags import FlagThreshold, UncertaintyExceeded

logger = logging.getLogger(__name__)

STD_PROPERTIES = ("energy_std", "forces_std", "energies_std")

#: Every key a calculation may put in ``results`` beyond ASE's own, with its shape
#: (``"natoms"`` per atom), registered with ASE so that ``atoms.get_properties`` (and
#: drivers built on it, such as i-PI's) accept them (ASE knows only float and int
#: types: the flags are 0 or 1 there).
EXTRA_RESULTS = {
    "energy_std": (float, ()), "energy_std_epistemic": (float, ()),
    "energy_std_aleatoric": (float, ()), "energies_std": (float, ("natoms",)),
    "energies_std_epistemic": (float, ("natoms",)), "forces_std": (float, ("natoms", 3)),
    "forces_std_epistemic": (float, ("natoms", 3)),
    "forces_std_aleatoric": (float, ("natoms", 3)), "flagged": (int, ()),
    "flagged_atoms": (int, ("natoms",)),
}


def _register_results() -> None:
    """Declare :data:`EXTRA_RESULTS` to ASE's output registry (once)."""
    for name, (dtype, shape) in EXTRA_RESULTS.items():
        if name not in outputs.all_outputs:
            outputs._defineprop(name, dtype, shape)


_register_results()


class GAPCalculator(Calculator):
    """ASE calculator wrapping a fitted :class:`gapkit.GAP`.

    Parameters
    ----------
    model : GAP
        A fitted model (``gapkit.load(path)`` or ``GAP(...).fit(frames)``).
    compute_std : bool, default False
        Compute every uncertainty at every call. Otherwise only what is asked for:
        ``energy_std`` or ``energies_std`` alone cost one triangular solve with the
        local-energy kernel rows; ``forces_std`` (and a flag threshold on forces) add
        the force stds (see ``force_std``).
    flag_threshold : FlagThreshold, optional
        When set, every calculation records whether the epistemic uncertainty passes
        the threshold (``results["flagged"]``, ``results["flagged_atoms"]``) and
        appends an entry to :attr:`flag_log`. Relative thresholds (``3x``) are
        multiples of ``model.flag_reference()``.
    force_std : {"fast", "exact"}, default "fast"
        Force stds of a calibrated model: ``"fast"`` (per atom, about the cost of
        energies and forces: cheap enough for every MD step) or ``"exact"`` (every
        component, ~25x the cost; the more adaptive one). Uncalibrated models are
        always exact.
    on_flag : {"record", "warn", "raise"}, default "record"
        What to do when a flag fires: only record it, also log a warning, or raise
        :class:`gapkit.uncertainty.UncertaintyExceeded` (which stops an ASE dynamics
        run at the offending step).

    Notes
    -----
    ``results`` keys: ``energy``, ``free_energy`` (eV), ``energies`` (n,) eV,
    ``forces`` (n, 3) eV/Å, ``stress`` (6,) eV/Å³ (fully periodic cells), and, when
    computed, ``energy_std`` (eV), ``energies_std`` (n,) eV, ``forces_std`` (n, 3)
    eV/Å (total = epistemic and aleatoric in quadrature), ``energy_std_epistemic``,
    ``energy_std_aleatoric``, ``energies_std_epistemic``, ``forces_std_epistemic``,
    ``forces_std_aleatoric``, ``flagged`` and ``flagged_atoms``. All are accepted by
    ``atoms.get_properties([...])``. Every structure is checked as
    :meth:`gapkit.GAP.predict` checks it (finite positions, no overlapping atoms, a
    sound cell, known species): a ``ValueError`` stops a run that blew up.
    """
    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress",
                              *STD_PROPERTIES]
    default_parameters: dict = {}
    nolabel = True

    def __init__(self, model, *, compute_std: bool = False,
                 flag_threshold: FlagThreshold | None = None, on_flag: str = "record",
                 force_std: str = "fast", **kwargs):
        super().__init__(**kwargs)
        check_is_fitted(model, "state_")
        if on_flag not in ("record", "warn", "raise"):
            raise ValueError(f"on_flag must be 'record', 'warn' or 'raise', got {on_flag!r}")
        self.model = model
        self.compute_std = compute_std
        self.flag_threshold = flag_threshold
        self.on_flag = on_flag
        if force_std not in ("fast", "exact"):
            raise ValueError(f"force_std must be 'fast' or 'exact', got {force_std!r}")
        self.force_std = force_std
        self.flag_log: list[dict] = []
        self.n_calls = 0

    def _wanted(self, properties) -> tuple[bool, bool]:
        """(energy stds, force stds) needed for ``properties``."""
        if self.compute_std:
            return True, True
        thr = self.flag_threshold
        flag_e = thr is not None and (thr.energy_per_atom is not None or thr.relative is not None)
        flag_f = thr is not None and (thr.forces is not None or thr.relative is not None)
        want_f = "forces_std" in properties or flag_f
        want_e = want_f or flag_e or any(p in properties for p in ("energy_std", "energies_std"))
        return want_e, want_f

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(np.all(atoms.get_pbc()))
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress needs a fully periodic cell")
        # the strain derivatives cost extra: only when stress is asked for (MD asks forces)
        want_stress = periodic and "stress" in properties
        model = self.model
        model.check_structure(atoms)
        want_e, want_f = self._wanted(properties)
        exact = want_f and model.force_std_mode(self.force_std) == "exact"
        r = model.predict_structure(atoms, forces=True, stress=want_stress, keep_gradients=exact)
        self.results = {"energy": r.energy, "free_energy": r.energy,
                        "energies": r.energies, "forces": r.forces}
        if want_stress:
            self.results["stress"] = r.stress
        if want_e:
            std = model.std_structure(atoms, r, forces=want_f, force_std=self.force_std)
            self.results.update(
                energy_std=float(std.energy[0]), energies_std=std.energies[0],
                energy_std_epistemic=float(std.energy_epistemic[0]),
                energy_std_aleatoric=float(std.energy_aleatoric[0]),
                energies_std_epistemic=std.energies_epistemic[0])
            if want_f:
                self.results.update(forces_std=std.forces[0],
                                    forces_std_epistemic=std.forces_epistemic[0],
                                    forces_std_aleatoric=std.forces_aleatoric[0])
            if self.flag_threshold is not None:
                self._flag(std, atoms)
        self.n_calls += 1

    def _flag(self, std, atoms) -> None:
        fl = self.flag_threshold.evaluate(std, [atoms], self.model.flag_reference(self.force_std))
        flagged = bool(fl.structures[0])
        self.results["flagged"] = flagged
        self.results["flagged_atoms"] = fl.atoms[0]
        entry = {"call": self.n_calls, "flagged": flagged,
                 "energy_std_epistemic": float(std.energy_epistemic[0]),
                 "max_forces_std_epistemic": (float(np.max(std.forces_epistemic[0]))
                                              if std.forces_epistemic is not None else None),
                 "n_flagged_atoms": int(np.sum(fl.atoms[0]))}
        self.flag_log.append(entry)
        if flagged:
            f_max = entry["max_forces_std_epistemic"]
            msg = (f"uncertainty threshold passed at call {self.n_calls}: "
                   f"{entry['n_flagged_atoms']} atom(s) flagged, "
                   + (f"max epistemic force std {f_max:.3g} eV/Å, " if f_max is not None else "")
                   + f"energy std {entry['energy_std_epistemic']:.3g} eV")
            if self.on_flag == "raise":
                raise UncertaintyExceeded(msg, atoms=atoms.copy(), entry=entry)
            if self.on_flag == "warn":
                logger.warning(msg)
