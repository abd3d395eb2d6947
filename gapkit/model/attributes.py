"""The fitted attributes of :class:`gapkit.GAP`: read-only views of its ``state_``.

:class:`FittedAttributes` is the estimator's mixin for the scikit-learn-style fitted
attributes (``alpha_``, ``delta_``, ``terms_``, ...). Each reads the one
:class:`~gapkit.model.state.FittedState` in ``state_`` and raises
:class:`~sklearn.exceptions.NotFittedError` before a fit.

Models with several kernel terms (the default model is SOAP + 2-body, see
:func:`gapkit.gp.terms.default_terms`): ``descriptor_`` is the first term's
descriptor (SOAP in the default model), ``sparse_species_`` and ``alpha_`` run over
the sparse columns of all terms, and ``sparse_q_`` (one array of one descriptor)
exists for one-term models only: the sparse environments of term ``t`` are
``terms_[t].sparse_q``.
"""

from __future__ import annotations

import numpy as np
from sklearn.exceptions import NotFittedError

from gapkit.gp import terms
from gapkit.model.state import FittedState

__all__ = ["FittedAttributes"]


class FittedAttributes:
    """Mixin: the fitted attributes of a model with a ``state_`` (a FittedState or None)."""

    def _check_fitted(self) -> None:
        if getattr(self, "state_", None) is None:
            raise NotFittedError("This GAP is not fitted yet: call fit(frames) first, or "
                                 "gapkit.load(path) a saved model")

    def _state(self) -> FittedState:
        self._check_fitted()
        return self.state_

    terms_ = property(lambda self: list(self._state().terms),
                      doc="Kernel terms (list of FittedTerm).")
    descriptor_ = property(lambda self: self._state().descriptor,
                           doc="Fitted descriptor of the first term (SOAP in the default model).")
    species_ = property(lambda self: list(self._state().species), doc="Atomic numbers.")
    e0_ = property(lambda self: self._state().e0, doc="ReferenceEnergies (eV).")
    alpha_ = property(lambda self: self._state().alpha, doc="Unit-scale weights, (M,).")
    delta_ = property(lambda self: self._state().delta, doc="Signal scale, eV.")
    noise_ = property(lambda self: self._state().noise, doc="Noise per NoiseGroup.")
    n_train_ = property(lambda self: self._state().n_train, doc="Training rows per group.")
    calibration_ = property(lambda self: self._state().calibration, doc="Calibration.")
    kmm_cholesky_ = property(lambda self: self._state().kmm_cholesky, doc="Cholesky of K_MM.")
    posterior_factor_ = property(lambda self: self._state().posterior_factor,
                                 doc="Upper R_P of the weight posterior.")
    log_marginal_likelihood_ = property(lambda self: self._state().log_marginal_likelihood,
                                        doc="DTC log evidence of the training data.")

    @property
    def extra_(self) -> dict:
        """Free-form JSON-able entries stored with the model."""
        return self._state().extra

    @extra_.setter
    def extra_(self, value: dict) -> None:
        self.state_ = self._state().replace(extra=dict(value))

    @property
    def sparse_q_(self) -> np.ndarray:
        """Sparse environments, shape (M, F), of a one-term model.

        Raises
        ------
        AttributeError
            For a model with several terms (such as the default SOAP + 2-body model),
            naming the terms and ``terms_[t].sparse_q``.
        """
        state = self._state()
        if len(state.terms) != 1:
            names = ", ".join(f"terms_[{k}]: {type(t.descriptor).__name__} "
                              f"{t.sparse_q.shape}" for k, t in enumerate(state.terms))
            raise AttributeError(f"sparse_q_ is defined for one-term models only; this model "
                                 f"has {len(state.terms)} terms ({names}): use "
                                 f"terms_[t].sparse_q")
        return state.terms[0].sparse_q

    @property
    def sparse_species_(self) -> np.ndarray:
        """Species of the stacked sparse environments of all terms, shape (M,)."""
        return terms.sparse_species(self._state().terms)
