"""Loading a model file into a fitted :class:`~gapkit.model.estimator.GAP`."""

from __future__ import annotations

from gapkit.model import model_file
from gapkit.model.estimator import GAP
from gapkit.physics.baselines import baseline_from_dict

__all__ = ["load"]


def load(path, baseline=None) -> GAP:
    """Load a model written by :meth:`GAP.save`.

    Parameters
    ----------
    path : str or path
    baseline : ase Calculator, optional
        The Delta-learning baseline, required when the model was trained with a user
        calculator (only its class name is stored). A gapkit baseline is rebuilt from
        the file; passing one overrides it.

    Returns
    -------
    GAP
        Fitted; ``log_marginal_likelihood()`` with new hyperparameters needs a refit.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a gapkit model, is truncated or corrupt, has an
        unsupported format version, or needs a baseline that was not given.
    """
    content = model_file.read(path)
    bmeta = content.baseline
    if baseline is None and bmeta is not None:
        if bmeta["kind"] == "gapkit":
            baseline = baseline_from_dict(bmeta["spec"])
        else:
            raise ValueError(f"'{path}' was trained with the baseline calculator "
                             f"{bmeta['class']}; pass it again: gapkit.load(path, baseline=...)")
    model = GAP(descriptor=content.descriptor, baseline=baseline, **content.params)
    model.state_ = content.state
    model._groups = None
    return model
