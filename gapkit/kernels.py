"""The normalised dot-product (polynomial) SOAP kernel and its derivatives.

``k(q, q') = delta**2 * (q . q')**zeta`` between environments with the same central
species and zero otherwise. ``delta`` (eV) is handled by the GP as an overall
scale; the functions here work with the unit-scale kernel ``(q . q')**zeta``.

All row builders return the *unit-scale* design matrices of the linear functionals
that GAP is trained on and predicts:

* energy of a structure, ``E = sum_i eps_i``: row ``sum_i k(q_i, q_m)``;
* force ``F_ja = -dE/dr_ja``: row ``-sum_i dk(q_i, q_m)/dq_i . dq_i/dr_ja``;
* virial ``W_ab = -dE/deta_ab``: row ``-sum_i dk(q_i, q_m)/dq_i . dq_i/deta_ab``.
"""

from __future__ import annotations

import numpy as np

from .descriptors.base import DescriptorSet


def dot_kernel(Q1: np.ndarray, Q2: np.ndarray, zeta: float) -> np.ndarray:
    """Unit-scale kernel matrix ``(Q1 Q2^T)**zeta``, shape (n1, n2)."""
    return _pow(Q1 @ Q2.T, zeta)


def _pow(x: np.ndarray, p: float) -> np.ndarray:
    # (q . q') is >= 0 for SOAP power spectra up to round-off; clip so that
    # non-integer zeta never produces NaN.
    if float(p).is_integer():
        return x ** int(p)
    return np.clip(x, 0.0, None) ** p


def species_mask(z1: np.ndarray, z2: np.ndarray) -> np.ndarray:
    """Boolean (n1, n2) matrix: same central species."""
    return np.asarray(z1)[:, None] == np.asarray(z2)[None, :]


def kernel_mm(Qm: np.ndarray, zm: np.ndarray, zeta: float) -> np.ndarray:
    """Unit-scale K_MM (block diagonal in species), shape (M, M)."""
    return dot_kernel(Qm, Qm, zeta) * species_mask(zm, zm)


def local_rows(ds: DescriptorSet, Qm: np.ndarray, zm: np.ndarray, zeta: float) -> np.ndarray:
    """Unit-scale local-energy rows ``k(q_i, q_m)``, shape (n_atoms, M)."""
    return dot_kernel(ds.q, Qm, zeta) * species_mask(ds.numbers, zm)


def _dk_coeff(ds: DescriptorSet, Qm: np.ndarray, zm: np.ndarray, zeta: float) -> np.ndarray:
    """``zeta (q_i . q_m)**(zeta-1)`` masked by species, shape (n_atoms, M).

    ``dk(q_i, q_m)/dq_i = coeff[i, m] * q_m``.
    """
    return zeta * _pow(ds.q @ Qm.T, zeta - 1) * species_mask(ds.numbers, zm)


def design_rows(ds: DescriptorSet, Qm: np.ndarray, zm: np.ndarray, zeta: float,
                energy: bool = True, forces: bool = True, virial: bool = False
                ) -> dict[str, np.ndarray]:
    """Unit-scale design rows of one structure.

    Parameters
    ----------
    ds : DescriptorSet
        Descriptor with gradients (and strain gradients for ``virial``).
    Qm, zm : ndarray
        Sparse environments, shape (M, F), and their species, shape (M,).
    zeta : float
        Kernel exponent.

    Returns
    -------
    dict
        ``"energy"``: shape (1, M); ``"forces"``: shape (3 n_atoms, M), rows ordered
        atom-major (``3 j + a``); ``"virial"``: shape (9, M), rows ``3 a + b``.
    """
    out = {}
    if energy:
        out["energy"] = local_rows(ds, Qm, zm, zeta).sum(axis=0, keepdims=True)
    if forces or virial:
        coeff = _dk_coeff(ds, Qm, zm, zeta)  # (n, M)
    if forces:
        P, _, F = ds.dq.shape
        proj = (ds.dq.reshape(P * 3, F) @ Qm.T).reshape(P, 3, -1)  # dq_i/dr_j . q_m
        proj *= coeff[ds.pair_i][:, None, :]
        out["forces"] = -(ds.scatter_matrix() @ proj.reshape(P * 3, -1))
    if virial:
        if ds.dq_strain is None:
            raise ValueError("virial rows need strain derivatives (a periodic cell)")
        n = ds.n_atoms
        proj = (ds.dq_strain.reshape(n * 9, -1) @ Qm.T).reshape(n, 9, -1)
        out["virial"] = -np.einsum("nkm,nm->km", proj, coeff)
    return out


def local_energy_gradient(ds: DescriptorSet, Qm: np.ndarray, zm: np.ndarray, zeta: float,
                          weights: np.ndarray) -> np.ndarray:
    """``d eps_i / d q_i`` for unit-scale weights, shape (n_atoms, F).

    ``eps_i = sum_m weights[m] k(q_i, q_m)``, so the gradient is
    ``sum_m weights[m] coeff[i, m] q_m``; contracting it with ``dq`` gives forces as a
    vector-Jacobian product without forming force rows.
    """
    coeff = _dk_coeff(ds, Qm, zm, zeta)
    return (coeff * weights[None, :]) @ Qm
