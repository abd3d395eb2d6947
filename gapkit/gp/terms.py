"""Additive kernels: one term per descriptor, as GAP's "2b+SOAP".

A GAP model's kernel is a sum of terms,

    k(A, B) = delta**2 * sum_t w_t**2 * (q_t(A) . q_t(B))**zeta_t,

each with its own descriptor ``q_t`` (e.g. a :class:`~gapkit.descriptors.TwoBody`
distance descriptor and a :class:`~gapkit.descriptors.SOAP`), exponent ``zeta_t``,
relative weight ``w_t`` and set of sparse environments. The sparse sets of all terms
are stacked into one set of ``M = sum_t M_t`` columns: ``K_MM`` is block diagonal
and a training row is the concatenation of the per-term rows scaled by ``w_t**2``,
so the GP solver (:mod:`gapkit.gp`) sees one ordinary design matrix. The local
energy is the sum of the terms' local energies, and forces, virials and every
variance are sums over terms.

A plain single-descriptor model is the one-term case (``w = 1``).

The default model
-----------------
``GAP(descriptor=None)`` is the two-term model of :func:`default_terms`: the SOAP of
:func:`default_soap` (the default :class:`~gapkit.descriptors.SOAP` with the radial
scaling ``u(r) = 2 / (1 + (r / r0)**m)``, ``m =`` :data:`DEFAULT_RADIAL_SCALING`,
``r0 =`` :data:`DEFAULT_RADIAL_SCALING_R0` Å) first, then a
:class:`~gapkit.descriptors.TwoBody` term with ``zeta=1`` (an exact pair potential)
and :data:`DEFAULT_TWO_BODY_SPARSE` sparse points per species. The SOAP term comes
first so that a model's ``descriptor_`` (its cutoff, species checks, fingerprints,
the MD engines) is the SOAP descriptor. The 2-body cutoff follows the many-body one:
``TwoBody(r_cut=soap.r_cut)``, with the same species. A descriptor given explicitly
(``GAP(descriptor=SOAP(r_cut=6))``) is that descriptor alone, as given: ``SOAP()``
itself is DScribe's SOAP, without radial scaling. ``default_terms(default_soap(r_cut=6))``
is the default model with a 6 Å cutoff; ``default_terms(SOAP(r_cut=6))`` is the
2-body + SOAP model with that (unscaled) SOAP. Measured against SOAP alone
(docs/guide/accuracy.md): force errors 3-62 % lower on every set tried (EMT Cu and
Cu-Al, xTB ethanol and isopropanol made by the project, rMD17 ethanol, mlearn Si), for
50 more sparse points per species and a cheap descriptor. The radial scaling, at no
extra cost, lowers the force errors by a further 18 % on rMD17 ethanol and about a
third on the project's EMT and xTB sets, and mlearn Si's energy error by 17 % (its
forces within 3 %).

The scaling's ``r0`` is a distance of the first neighbour shells, not a fraction of
the cutoff: it stays 2 Å whatever ``r_cut`` is (a longer cutoff adds far neighbours,
which the scaling weighs down; it does not move the near ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.linalg as sla
from ase import Atoms
from sklearn.base import BaseEstimator

from gapkit.gp import kernels
from gapkit.descriptors import SOAP, TwoBody
from gapkit.descriptors.base import DescriptorSet

#: Sparse points per species of the default model's 2-body term (:func:`default_terms`).
DEFAULT_TWO_BODY_SPARSE = 50
#: Exponent ``m`` of the radial scaling of the default model's SOAP (:func:`default_soap`).
DEFAULT_RADIAL_SCALING = 4.0
#: ``r0`` (Å) of that scaling: ``u(r0) = 1``; fixed, whatever the cutoff.
DEFAULT_RADIAL_SCALING_R0 = 2.0


class Term(BaseEstimator):
    """One additive kernel term: a descriptor with its own exponent, weight and sparse set.

    Parameters
    ----------
    descriptor : descriptor object, optional
        Any gapkit descriptor (:class:`~gapkit.descriptors.SOAP`,
        :class:`~gapkit.descriptors.ACSF`, :class:`~gapkit.descriptors.TwoBody`).
        Its ``species`` may be left ``None``: the model fills them in from the data.
        ``None``: the default model's SOAP (:func:`default_soap`, with radial scaling).
    zeta : float, optional
        Kernel exponent of this term; default the model's ``zeta``. Use 1 for a
        :class:`~gapkit.descriptors.TwoBody` term to get an exact pair potential.
    weight : float or "auto", default "auto"
        Relative signal scale ``w`` (the term's delta is ``w * delta``).
        ``"auto"`` sets ``w = 1 / sqrt(mean_m (q_m . q_m)**zeta)`` over the term's
        sparse points, so that every term has unit prior variance per atom; this is
        exactly 1 for normalised descriptors.
    n_sparse : int or dict, optional
        Sparse environments per species for this term; default the model's.
    sparse_method : {"cur", "random", "fps"}, optional
        Default the model's.

    Examples
    --------
    >>> from gapkit import GAP, SOAP, Term
    >>> from gapkit.descriptors import TwoBody
    >>> model = GAP(descriptor=[Term(TwoBody(r_cut=5.0), zeta=1, n_sparse=50),
    ...                         Term(SOAP(r_cut=5.0), zeta=4)])
    """

    def __init__(self, descriptor=None, *, zeta: float | None = None,
                 weight: float | str = "auto", n_sparse: int | dict | None = None,
                 sparse_method: str | None = None):
        self.descriptor = descriptor
        self.zeta = zeta
        self.weight = weight
        self.n_sparse = n_sparse
        self.sparse_method = sparse_method


def default_soap(**params) -> SOAP:
    """The SOAP of the default model: ``SOAP(**params)`` with the default radial scaling.

    Parameters
    ----------
    **params
        :class:`~gapkit.descriptors.SOAP` parameters (``r_cut``, ``sigma``, ...).
        ``radial_scaling`` (default :data:`DEFAULT_RADIAL_SCALING`; ``0``: none, the
        plain ``SOAP(**params)``) and ``radial_scaling_r0`` (Å, default
        :data:`DEFAULT_RADIAL_SCALING_R0`, whatever ``r_cut`` is) may be given too.

    Returns
    -------
    SOAP
        Unfitted; its parameters are checked when it is first used.

    Examples
    --------
    >>> from gapkit.gp.terms import default_soap
    >>> default_soap(r_cut=6.0).radial_scaling_r0
    2.0
    """
    params.setdefault("radial_scaling", DEFAULT_RADIAL_SCALING)
    if params["radial_scaling"]:  # no scaling: SOAP()'s own r0, so that it equals SOAP()
        params.setdefault("radial_scaling_r0", DEFAULT_RADIAL_SCALING_R0)
    return SOAP(**params)


def default_terms(descriptor=None, two_body: int = DEFAULT_TWO_BODY_SPARSE) -> list[Term]:
    """The terms of the default model: ``descriptor`` (default :func:`default_soap`),
    then a 2-body term.

    Parameters
    ----------
    descriptor : descriptor, optional
        The many-body descriptor of the first term (a :class:`~gapkit.descriptors.SOAP`
        or :class:`~gapkit.descriptors.ACSF`; ``None``: :func:`default_soap`, SOAP with
        radial scaling). It is used as given (not copied, no scaling added); its
        ``r_cut`` (Å) and ``species`` are the 2-body term's.
    two_body : int, default :data:`DEFAULT_TWO_BODY_SPARSE`
        Sparse points per species of the ``TwoBody`` term (``zeta=1``); 0 leaves it out.

    Returns
    -------
    list of Term
        ``[Term(descriptor), Term(TwoBody(r_cut=descriptor.r_cut), zeta=1,
        n_sparse=two_body)]``, or ``[Term(descriptor)]`` for ``two_body=0``.

    Raises
    ------
    ValueError
        If ``two_body`` is not a non-negative integer.

    Examples
    --------
    >>> from gapkit import GAP
    >>> from gapkit.gp.terms import default_soap, default_terms
    >>> model = GAP(default_terms(default_soap(r_cut=6.0)))  # the default model, 6 Å cutoff
    """
    if (isinstance(two_body, (bool, np.bool_)) or not isinstance(two_body, (int, np.integer))
            or two_body < 0):
        raise ValueError(f"two_body must be a non-negative integer (sparse points per "
                         f"species of the 2-body term; 0: none), got {two_body!r}")
    many = default_soap() if descriptor is None else descriptor
    out = [Term(many)]
    if two_body:
        species = getattr(many, "species", None)
        pair = TwoBody(species=None if species is None else list(species),
                       r_cut=float(many.r_cut))
        out.append(Term(pair, zeta=1, n_sparse=int(two_body)))
    return out


def as_terms(descriptor) -> list[Term]:
    """Normalise a GAP ``descriptor`` parameter (None, a descriptor, a Term or a list of
    them) to a list of :class:`Term`; ``None`` is :func:`default_terms` (SOAP + 2-body)."""
    if descriptor is None:
        return default_terms()
    items = list(descriptor) if isinstance(descriptor, (list, tuple)) else [descriptor]
    if not items:
        raise ValueError("descriptor is an empty list: give at least one descriptor")
    return [it if isinstance(it, Term) else Term(it) for it in items]


@dataclass
class FittedTerm:
    """A term of a fitted model.

    Attributes
    ----------
    descriptor : descriptor object
        Fitted descriptor (species set).
    zeta : float
    weight : float
        Relative signal scale ``w``; the term enters the unit-scale kernel as ``w**2 k_t``.
    sparse_q : ndarray of shape (M_t, F_t)
    sparse_species : ndarray of shape (M_t,)
    start : int
        First column of this term in the stacked sparse set.
    """

    descriptor: object
    zeta: float
    weight: float
    sparse_q: np.ndarray
    sparse_species: np.ndarray
    start: int = 0

    @property
    def cols(self) -> slice:
        return slice(self.start, self.start + len(self.sparse_species))

    @property
    def scale(self) -> float:
        return self.weight ** 2


def auto_weight(sparse_q: np.ndarray, zeta: float) -> float:
    """``1 / sqrt(mean_m (q_m . q_m)**zeta)``: unit mean prior variance per sparse point."""
    prior = kernels.self_kernel(sparse_q, zeta)
    mean = float(np.mean(prior)) if len(prior) else 1.0
    if not mean > 0:
        raise ValueError("the sparse descriptors of a term are all zero: check its cutoff")
    return 1.0 / np.sqrt(mean)


def n_columns(terms: Sequence[FittedTerm]) -> int:
    """Total number of sparse columns M."""
    return sum(len(t.sparse_species) for t in terms)


def sparse_species(terms: Sequence[FittedTerm]) -> np.ndarray:
    """Species of all stacked sparse columns, shape (M,)."""
    return np.concatenate([t.sparse_species for t in terms])


def compute(terms: Sequence[FittedTerm], atoms: Atoms, gradients: bool = True,
            strain: bool | None = None, index: int = 0) -> list[DescriptorSet]:
    """The descriptor sets of one structure, one per term."""
    return [t.descriptor.compute(atoms, gradients=gradients, strain=strain, index=index)
            for t in terms]


def kernel_mm(terms: Sequence[FittedTerm]) -> np.ndarray:
    """Unit-scale ``K_MM`` of the stacked sparse set (block diagonal over terms), (M, M)."""
    return sla.block_diag(*[t.scale * kernels.kernel_mm(t.sparse_q, t.sparse_species, t.zeta)
                            for t in terms])


def design_rows(terms: Sequence[FittedTerm], dsets: Sequence[DescriptorSet],
                energy: bool = True, forces: bool = True, virial: bool = False
                ) -> dict[str, np.ndarray]:
    """Unit-scale design rows of one structure over all terms.

    Returns
    -------
    dict
        As :func:`gapkit.kernels.design_rows`, with ``M = sum_t M_t`` columns.
    """
    if len(terms) == 1:
        t = terms[0]
        out = kernels.design_rows(dsets[0], t.sparse_q, t.sparse_species, t.zeta,
                                  energy=energy, forces=forces, virial=virial)
        return {k: t.scale * v for k, v in out.items()} if t.scale != 1.0 else out
    parts = [kernels.design_rows(ds, t.sparse_q, t.sparse_species, t.zeta,
                                 energy=energy, forces=forces, virial=virial)
             for t, ds in zip(terms, dsets)]
    return {k: np.hstack([t.scale * p[k] for t, p in zip(terms, parts)]) for k in parts[0]}


def local_rows(terms: Sequence[FittedTerm], dsets: Sequence[DescriptorSet]) -> np.ndarray:
    """Unit-scale local-energy rows, shape (n_atoms, M)."""
    return np.hstack([t.scale * kernels.local_rows(ds, t.sparse_q, t.sparse_species, t.zeta)
                      for t, ds in zip(terms, dsets)])


def local_prior(terms: Sequence[FittedTerm], dsets: Sequence[DescriptorSet]) -> np.ndarray:
    """Unit-scale prior covariance of the local energies of one structure, (n, n)."""
    out = 0.0
    for t, ds in zip(terms, dsets):
        out = out + t.scale * (kernels.dot_kernel(ds.q, ds.q, t.zeta)
                               * kernels.species_mask(ds.numbers, ds.numbers))
    return out


def local_prior_sum_diag(terms: Sequence[FittedTerm], dsets: Sequence[DescriptorSet],
                        block: int = 1024) -> tuple[float, np.ndarray]:
    """The sum of all entries and the diagonal of :func:`local_prior`, without the
    (n, n) matrix: per species and in row blocks of ``block`` atoms (memory O(block n)).

    Returns
    -------
    total : float
        Unit-scale prior variance of the total energy.
    diag : ndarray of shape (n_atoms,)
        Unit-scale prior variances of the local energies.
    """
    n = dsets[0].n_atoms
    total, diag = 0.0, np.zeros(n)
    for t, ds in zip(terms, dsets):
        diag += t.scale * kernels.self_kernel(ds.q, t.zeta)
        for z in np.unique(ds.numbers):
            q = ds.q[ds.numbers == z]
            for b0 in range(0, len(q), block):
                total += t.scale * float(kernels.dot_kernel(q[b0:b0 + block], q, t.zeta).sum())
    return total, diag


def force_prior(terms: Sequence[FittedTerm], dsets: Sequence[DescriptorSet]) -> np.ndarray:
    """Unit-scale prior variance of every force component, shape (3 n_atoms,)."""
    return sum(t.scale * kernels.force_prior_variance(ds, t.zeta) for t, ds in zip(terms, dsets))


def local_energies_and_gradients(terms: Sequence[FittedTerm], dsets: Sequence[DescriptorSet],
                                 alpha: np.ndarray, gradients: bool = True
                                 ) -> tuple[np.ndarray, list | None]:
    """Unit-scale local energies (n_atoms,) summed over terms, and the per-term
    gradients ``d eps_i / d q_t,i`` (a list of (n_atoms, F_t) arrays, or ``None``)."""
    eps, grads = 0.0, [] if gradients else None
    for t, ds in zip(terms, dsets):
        e, g = kernels.local_energies_and_gradients(ds, t.sparse_q, t.sparse_species, t.zeta,
                                                    t.scale * alpha[t.cols], gradients=gradients)
        eps = eps + e
        if gradients:
            grads.append(g)
    return eps, grads
