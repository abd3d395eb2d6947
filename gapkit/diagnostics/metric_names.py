"""Names and units of the quantities recorded by learning and capacity curves.

A curve records, per refit, the errors on the training subset (``train_*``) and on
the test set (``test_*``), the mean predicted standard deviations on the test set
(``test_*std*``) and a few properties of the fitted model.

Units: energies in eV per structure (``energy_*``) or eV/atom (``*_per_atom``),
forces in eV/Å, times in s.
"""

from __future__ import annotations

#: Error metrics of :func:`gapkit.metrics.error_metrics` recorded for both splits.
ERROR_METRICS = ("energy_mae", "energy_rmse", "energy_mae_per_atom", "energy_rmse_per_atom",
                 "forces_mae", "forces_rmse")
#: Mean predicted standard deviations, recorded on the test set only.
STD_METRICS = ("energy_std_per_atom", "energy_std_epistemic_per_atom", "forces_std",
               "forces_std_epistemic")
#: Properties of the fitted model: learned noise, signal scale, sparse points, fit time.
OTHER_METRICS = ("noise_energy", "noise_forces", "delta", "n_sparse_points", "fit_time")
#: Every recorded quantity, with its ``train_``/``test_`` prefix.
METRICS = (tuple(f"train_{m}" for m in ERROR_METRICS) + tuple(f"test_{m}" for m in ERROR_METRICS)
           + tuple(f"test_{m}" for m in STD_METRICS) + OTHER_METRICS)

#: Human-readable name and unit of every recorded quantity (without train_/test_).
METRIC_INFO = {
    "energy_mae": ("energy MAE", "eV"),
    "energy_rmse": ("energy RMSE", "eV"),
    "energy_mae_per_atom": ("energy MAE", "eV/atom"),
    "energy_rmse_per_atom": ("energy RMSE", "eV/atom"),
    "forces_mae": ("force MAE", "eV/Å"),
    "forces_rmse": ("force RMSE", "eV/Å"),
    "energy_std_per_atom": ("mean predicted energy σ", "eV/atom"),
    "energy_std_epistemic_per_atom": ("mean epistemic energy σ", "eV/atom"),
    "forces_std": ("mean predicted force σ", "eV/Å"),
    "forces_std_epistemic": ("mean epistemic force σ", "eV/Å"),
    "noise_energy": ("learned energy noise σ_E", "eV/√atom"),
    "noise_forces": ("learned force noise σ_F", "eV/Å"),
    "delta": ("signal scale δ", "eV"),
    "n_sparse_points": ("sparse points M", ""),
    "fit_time": ("fit time", "s"),
}


def error_metric(metric: str, caller: str = "metric") -> str:
    """``metric`` without its ``train_``/``test_`` prefix, checked against :data:`ERROR_METRICS`.

    Parameters
    ----------
    metric : str
        E.g. ``"forces_rmse"`` or ``"test_energy_rmse_per_atom"``.
    caller : str, default "metric"
        The start of the error message.

    Returns
    -------
    str
        The bare error-metric name.

    Raises
    ------
    ValueError
        If ``metric`` is not an error metric.
    """
    bare = metric.removeprefix("test_").removeprefix("train_")
    if bare not in ERROR_METRICS:
        raise ValueError(f"{caller} must be one of {ERROR_METRICS}, got {bare!r}")
    return bare
