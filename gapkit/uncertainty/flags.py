"""Uncertainty flags: when is a prediction too uncertain to trust?

A :class:`FlagThreshold` compares the epistemic (or total) std of a prediction with
absolute limits (eV/Å on force components, eV/atom on energies) or with a multiple of
the model's reference stds (a high per-atom quantile of the calibrated std on the
calibration data; the learned noise for uncalibrated models), per atom and per
structure.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from gapkit.model.state import noise_level


class UncertaintyExceeded(RuntimeError):
    """Raised by :class:`gapkit.GAPCalculator` when a flag fires with ``on_flag="raise"``.

    Attributes
    ----------
    atoms : ase.Atoms
        The structure that was flagged.
    entry : dict
        The flag-log entry.
    """

    def __init__(self, message: str, atoms=None, entry: dict | None = None):
        super().__init__(message)
        self.atoms = atoms
        self.entry = entry or {}


@dataclass
class Flags:
    """Flag result: ``atoms`` is a list of (n_atoms_k,) bools, ``structures`` (n_frames,) bools."""

    atoms: list
    structures: np.ndarray

    def summary(self) -> dict:
        return {"n_structures": int(len(self.structures)),
                "n_flagged_structures": int(np.sum(self.structures)),
                "n_flagged_atoms": int(sum(int(np.sum(a)) for a in self.atoms)),
                "flagged_indices": [int(i) for i in np.nonzero(self.structures)[0]]}


@dataclass
class FlagThreshold:
    """When is a prediction too uncertain?

    Parameters
    ----------
    forces : float, optional
        Absolute threshold in eV/Å on an atom's largest force-component std.
    energy_per_atom : float, optional
        Absolute threshold in eV/atom on a local-energy std (per atom) and on the
        structure's energy std divided by its atom count.
    relative : float, optional
        Threshold as a multiple of the model's reference stds (``GAP.flag_reference()``).
        For a model calibrated by this version: the 98th percentile over the
        calibration atoms of an atom's calibrated epistemic std (its largest
        force-component std; its local-energy std), so ``3x`` flags an atom whose std is
        more than three times what only 2 % of the atoms of data like the calibration
        data reach. A per-atom quantile does not grow with the size or number of
        molecules in a frame. Models calibrated before (their
        ``calibration_.reference`` has no ``"quantile"``) keep their stored unit: the
        RMS over calibration frames of each frame's largest std. For an uncalibrated
        model: the learned noises ``sigma_F``, ``sigma_E``.
    use : {"epistemic", "total"}, default "epistemic"
        Which std is compared. Epistemic is what grows under extrapolation.

    A structure is flagged when any of its atoms is, or when its energy criterion
    fires.
    """

    forces: float | None = None
    energy_per_atom: float | None = None
    relative: float | None = None
    use: str = "epistemic"

    def __post_init__(self):
        if self.forces is None and self.energy_per_atom is None and self.relative is None:
            raise ValueError("FlagThreshold needs at least one of forces=, energy_per_atom=, relative=")
        for name in ("forces", "energy_per_atom", "relative"):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and v > 0):
                raise ValueError(f"FlagThreshold.{name} must be a positive number, got {v!r}")
        if self.use not in ("epistemic", "total"):
            raise ValueError(f"FlagThreshold.use must be 'epistemic' or 'total', got {self.use!r}")

    @classmethod
    def parse(cls, text: str) -> "FlagThreshold":
        """Parse a command-line spec: ``forces=0.1``, ``energy=0.005``, ``3x`` (relative) or a
        comma-separated mix, e.g. ``forces=0.15,energy=0.01``. A bare number is a force
        threshold in eV/Å."""
        kw: dict = {}
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if part.endswith("x"):
                    kw["relative"] = float(part[:-1])
                elif "=" in part:
                    key, val = part.split("=", 1)
                    key = key.strip()
                    name = {"forces": "forces", "f": "forces", "energy": "energy_per_atom",
                            "e": "energy_per_atom", "relative": "relative", "use": "use"}.get(key)
                    if name is None:
                        raise ValueError
                    kw[name] = val.strip() if name == "use" else float(val)
                else:
                    kw["forces"] = float(part)
            except ValueError:
                raise ValueError(f"Cannot parse flag threshold {text!r}: use e.g. 'forces=0.1', "
                                 "'energy=0.005', '3x' or 'forces=0.1,energy=0.005'") from None
        return cls(**kw)

    def _stds(self, std):
        """The (force, local-energy, energy) stds that this threshold compares."""
        if self.use == "epistemic":
            return std.forces_epistemic, std.energies_epistemic, std.energy_epistemic
        return std.forces, std.energies, std.energy

    def atom_scores(self, std, frames: Sequence, noise: dict) -> list[np.ndarray]:
        """Per-atom scores: the largest ratio of std to threshold over the criteria set.

        An atom is flagged exactly when its score is above 1. The ratios are an atom's
        largest force-component std over ``forces`` (eV/Å over eV/Å), its local-energy
        std over ``energy_per_atom`` (eV over eV/atom), and with ``relative`` the same
        two stds over ``relative`` times the learned force / energy noise (criteria
        whose noise is not positive are left out). A score is 0 when no criterion
        applies; a NaN std never counts.

        Parameters
        ----------
        std : gapkit.model.PredictionStd
            Predictive stds of ``frames`` (eV, eV/Å).
        frames : sequence of ase.Atoms
            The structures predicted.
        noise : mapping
            The reference of ``relative``: ``GAP.flag_reference()`` (keys ``"forces"``
            in eV/Å and ``"energy_per_atom"`` in eV), or a learned-noise mapping
            (``GAP.noise_``) to compare with the noises.

        Returns
        -------
        list of ndarray
            One array of shape (n_atoms_k,) per structure, dimensionless.
        """
        return self._scores(std, frames, noise)[0]

    def structure_scores(self, std, frames: Sequence, noise: dict) -> np.ndarray:
        """Per-structure scores: the largest :meth:`atom_scores` of a structure, or its
        energy std per atom over ``energy_per_atom`` (eV/atom over eV/atom) when larger.

        A structure is flagged by :meth:`evaluate` exactly when its score is above 1.

        Parameters
        ----------
        std, frames, noise
            As for :meth:`atom_scores`.

        Returns
        -------
        ndarray of shape (n_frames,)
            Dimensionless scores (>= 0).
        """
        return self._scores(std, frames, noise)[1]

    def _scores(self, std, frames: Sequence, noise: dict) -> tuple[list[np.ndarray], np.ndarray]:
        """Atom and structure scores (see :meth:`atom_scores`, :meth:`structure_scores`)."""
        f_std, e_std, E_std = self._stds(std)
        sF, sE = reference_levels(noise)
        per_atom, struct = [], np.zeros(len(frames))
        for k, atoms in enumerate(frames):
            n = len(atoms)
            s_force = np.max(f_std[k], axis=1) if f_std is not None else np.zeros(n)
            s_energy = np.asarray(e_std[k], dtype=np.float64)
            ratios = [np.zeros(n)]
            if self.forces is not None:
                ratios.append(s_force / self.forces)
            if self.energy_per_atom is not None:
                ratios.append(s_energy / self.energy_per_atom)
            if self.relative is not None:
                if sF > 0:
                    ratios.append(s_force / (self.relative * sF))
                if sE > 0:
                    ratios.append(s_energy / (self.relative * sE))
            # fmax: a NaN ratio is ignored, as a NaN comparison is False
            score = functools.reduce(np.fmax, ratios)
            per_atom.append(score)
            struct[k] = float(np.max(score, initial=0.0))
            if self.energy_per_atom is not None:
                struct[k] = np.fmax(struct[k], float(E_std[k]) / n / self.energy_per_atom)
        return per_atom, struct

    def evaluate(self, std, frames: Sequence, noise: dict) -> Flags:
        """Flags for the predictive stds of ``frames``: a score above 1.

        Parameters
        ----------
        std : gapkit.model.PredictionStd
        frames : sequence of ase.Atoms
        noise : dict
            As for :meth:`atom_scores`.

        Returns
        -------
        Flags
            ``atoms[k]`` is ``atom_scores(...)[k] > 1`` and ``structures`` is
            ``structure_scores(...) > 1``.
        """
        per_atom, struct = self._scores(std, frames, noise)
        return Flags(atoms=[a > 1.0 for a in per_atom], structures=struct > 1.0)


def reference_levels(reference: Mapping) -> tuple[float, float]:
    """``(forces, energy per atom)`` reference stds of relative thresholds, from
    ``GAP.flag_reference()`` or from a learned-noise mapping (``GAP.noise_``)."""
    if "energy_per_atom" in reference:
        return float(reference.get("forces", 0.0)), float(reference["energy_per_atom"])
    return noise_level(reference, "forces"), noise_level(reference, "energy")
