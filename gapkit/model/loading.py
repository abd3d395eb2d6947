"""Loading a model file into a fitted :class:`~gapkit.model.estimator.GAP`."""

from __future__ import annotations

from gapkit.model import model_file
from gapkit.model.model_file import ModelFileError
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
    ModelFileError
        (a ``ValueError``) if the file is a directory, not a gapkit model, truncated,
        corrupt or inconsistent, or has an unsupported format version; the message
        names the file.
    ValueError
        If the model needs a baseline calculator that was not given.
    """
    content = model_file.read(path)
    bmeta = content.baseline
    if baseline is None and bmeta is not None:
        if not isinstance(bmeta, dict) or bmeta.get("kind") not in ("gapkit", "user"):
            raise ModelFileError(f"'{path}': unknown baseline record {bmeta!r} (corrupt file?)")
        if bmeta["kind"] == "user":
            raise ValueError(f"'{path}' was trained with the baseline calculator "
                             f"{bmeta.get('class')}; pass it again: gapkit.load(path, baseline=...)")
        try:
            baseline = baseline_from_dict(bmeta["spec"])
        except Exception as exc:  # a foreign or changed spec: any error of the rebuild
            raise ModelFileError(f"'{path}': cannot rebuild its baseline from {bmeta!r}: "
                                 f"{type(exc).__name__}: {exc}") from exc
    try:
        model = GAP(descriptor=content.descriptor, baseline=baseline, **content.params)
    except TypeError as exc:
        raise ModelFileError(f"'{path}': its estimator parameters are not those of this "
                             f"gapkit (corrupt or foreign file?): {exc}") from exc
    model.state_ = content.state
    model._groups = None
    return model
