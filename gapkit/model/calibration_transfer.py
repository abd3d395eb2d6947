"""The calibration of a model carried to another one trained on the same data.

With the default held-out split (:func:`gapkit.model.fit_once.fit_calibrated_state`),
the scales are fitted on the split model and used by the final model, which also has
the held-out rows: :func:`anchored` moves the posterior power maps to the final
model's posterior scale, and :func:`with_training_range` records the training range
of the compression and coordination terms over every frame the final model has.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from ase import Atoms

from gapkit.model.distance_variance import training_range
from gapkit.model.state import Calibration, VarianceScale

__all__ = ["anchored", "with_training_range"]


def anchored(cal: Calibration, ratio: float) -> Calibration:
    """``cal`` (fitted on a split model) for the final model, which is trained on the
    split model's data plus the held-out frames: the reference ``posterior_ref`` and
    the cap ``posterior_max`` of every posterior power map times ``ratio``.

    Adding data shrinks the posterior term of unseen structures about in proportion to
    the data (0.74-0.76 of the split model's ``V_P`` on the packaged data's test frames
    at ``ratio`` 0.8); a map about the split model's ``ref`` would count that shrink
    ``p`` times instead of once.

    Parameters
    ----------
    cal : Calibration
    ratio : float
        Training data of the split model over that of the final model, in (0, 1]
        (``1 - valid_fraction`` in frames).

    Returns
    -------
    Calibration
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")

    def one(s: VarianceScale) -> VarianceScale:
        return s if s.posterior_power == 1.0 else replace(
            s, posterior_ref=s.posterior_ref * ratio, posterior_max=s.posterior_max * ratio)

    return replace(cal, energy=one(cal.energy), forces={k: one(v) for k, v in cal.forces.items()},
                   forces_fast={k: one(v) for k, v in cal.forces_fast.items()})


def with_training_range(cal: Calibration, frames: Sequence[Atoms], forces: Sequence,
                        r_cut: float) -> Calibration:
    """``cal`` with the training range of the compression term of
    :mod:`gapkit.model.distance_variance` (pairs closer than anywhere in ``frames``
    add to the std).

    Parameters
    ----------
    cal : Calibration
    frames : list of ase.Atoms
        Every structure the final model is trained on.
    forces : list of ndarray (n_atoms_k, 3) or None
        Their reference forces, eV/Å.
    r_cut : float
        The descriptor cutoff, Å.

    Returns
    -------
    Calibration
    """
    return replace(cal, compression=training_range(frames, forces, r_cut))
