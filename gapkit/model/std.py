"""The stds of single structures that MD and active learning ask for, from a fitted state.

:class:`gapkit.GAP` delegates :meth:`~gapkit.GAP.force_std_mode`,
:meth:`~gapkit.GAP.flag_reference` and :meth:`~gapkit.GAP.std_structure` here: which
force std a model can give, the reference stds of relative flags, and the calibrated
stds of one structure from its prediction (over the model's variance basis, see
:mod:`gapkit.model.variance`).
"""

from __future__ import annotations

from typing import Sequence

from ase import Atoms

from gapkit.model.prediction import StructurePrediction
from gapkit.progress import progress_bar
from gapkit.model.state import FittedState
from gapkit.model.variance import PredictionStd, collect_std, variance_parts

__all__ = ["force_std_mode", "flag_reference", "std_structure", "std_of_predictions"]


def force_std_mode(state: FittedState, mode: str) -> str:
    """``"fast"`` or ``"exact"``: the force std a model gives for the wanted ``mode``
    (``"fast"`` needs a calibrated model with fast-force scales, else ``"exact"``)."""
    if mode not in ("fast", "exact"):
        raise ValueError(f"force_std must be 'fast' or 'exact', got {mode!r}")
    return mode if state.calibration.has_fast_forces else "exact"


def flag_reference(state: FittedState, mode: str) -> dict:
    """Reference stds of relative flag thresholds, ``{"forces": eV/Å, "energy_per_atom":
    eV}``, for the force std ``mode`` (see :meth:`gapkit.GAP.flag_reference`)."""
    ref = state.calibration.reference
    if not ref:
        return {"forces": state.noise_level("forces"),
                "energy_per_atom": state.noise_level("energy")}
    out = {"energy_per_atom": ref["energy_per_atom"]}
    key = "forces_fast" if force_std_mode(state, mode) == "fast" else "forces"
    if key in ref or "forces" in ref:
        out["forces"] = ref.get(key, ref.get("forces"))
    return out


def std_structure(state: FittedState, atoms: Atoms, prediction: StructurePrediction,
                  forces: bool, mode: str, full: bool = False) -> PredictionStd:
    """Calibrated stds of one structure from its prediction (see
    :meth:`gapkit.GAP.std_structure`); ``full``: over all ``M`` sparse columns instead of
    the variance basis."""
    fmode = force_std_mode(state, mode) if forces else None
    parts = variance_parts(state, prediction.descriptors, forces=fmode, atoms=atoms, full=full)
    return collect_std(state, [parts], [atoms], forces)


def std_of_predictions(state: FittedState, frames: Sequence[Atoms],
                       results: Sequence[StructurePrediction], forces: bool,
                       fmode: str | None, progress: bool | None = False) -> PredictionStd:
    """Calibrated stds of several predicted structures (:meth:`gapkit.GAP.predict`);
    ``fmode``: the resolved force std mode (``None``: no force stds), ``progress``: a
    bar over the structures."""
    parts = [variance_parts(state, r.descriptors, forces=fmode, atoms=a)
             for r, a in progress_bar(zip(results, frames), total=len(frames), desc="std",
                                      unit="frame", progress=progress)]
    return collect_std(state, parts, frames, forces)
