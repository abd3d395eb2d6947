"""The mlearn Si GAP of ``si_mlearn.py`` / ``si_nve.py`` / ``scaling.py`` (options and
builder) and JSON views of a fitted model's per-group values (``GAP.noise_``,
``GAP.n_train_``: :class:`gapkit.model.state.GroupValues` keyed by
:class:`gapkit.model.NoiseGroup`). gapkit is imported inside the functions."""

from __future__ import annotations

from .cli import add_noise_arguments, add_sparse_method_argument
from .datasets import SI_FILES, add_data_dir_argument


# ----------------------------------------------------------------------------------
# the mlearn Si GAP
# ----------------------------------------------------------------------------------
def add_si_model_arguments(p) -> None:
    """Data and model options of the mlearn Si GAP (``si_mlearn.py``, ``si_nve.py``)."""
    add_data_dir_argument(p, "si_mlearn", SI_FILES)
    p.add_argument("--n-train", type=int, default=None,
                   help="use N evenly spaced training cells (default: all 214)")
    p.add_argument("--r-cut", type=float, default=5.4, help="SOAP cutoff, Å")
    p.add_argument("--cutoff-width", type=float, default=1.0,
                   help="width of the cosine cutoff transition, Å (QUIP cutoff_transition_width)")
    p.add_argument("--n-max", type=int, default=8)
    p.add_argument("--l-max", type=int, default=8)
    p.add_argument("--sigma", type=float, default=0.5, help="atom Gaussian width, Å")
    p.add_argument("--zeta", type=float, default=4.0)
    p.add_argument("--delta", default="auto", help="kernel scale in eV, or 'auto' (gapkit's default)")
    p.add_argument("--n-sparse", type=int, default=1000, help="sparse points")
    add_sparse_method_argument(p)
    add_noise_arguments(p, 0.01, 0.05, 0.01)
    p.add_argument("--no-virials", action="store_true", help="train without the virials")
    p.add_argument("--e0", default="lstsq", help="gapkit e0: lstsq, zero, or a number (eV/atom)")
    p.add_argument("--jitter", type=float, default=1e-8,
                   help="K_MM jitter (gapkit jitter, QUIP sparse_jitter)")
    p.add_argument("--optimize", action="store_true",
                   help="gapkit: learn delta and the noises by type-II maximum likelihood "
                        "(QUIP then gets the learned values)")
    p.add_argument("--seed", type=int, default=0, help="random seed for both codes")


def parse_delta(text):
    return "auto" if str(text).strip().lower() == "auto" else float(text)


def parse_e0(text):
    text = str(text).strip()
    return text if text in ("lstsq", "zero") else {"Si": float(text)}


def build_si_model(args, cutoff: str = "cosine", r_cut: float | None = None):
    """The gapkit GAP of the Si options (:func:`add_si_model_arguments`) in ``args``."""
    from gapkit import GAP, SOAP
    soap = SOAP(r_cut=args.r_cut if r_cut is None else r_cut, n_max=args.n_max,
                l_max=args.l_max, sigma=args.sigma, cutoff=cutoff, cutoff_width=args.cutoff_width)
    return GAP(soap, zeta=args.zeta, delta=parse_delta(args.delta), n_sparse=args.n_sparse,
               sparse_method=args.sparse_method, energy_noise=args.energy_noise,
               force_noise=args.force_noise, virial_noise=args.virial_noise,
               e0=parse_e0(args.e0), jitter=args.jitter, optimize=args.optimize,
               random_state=args.seed)


# ----------------------------------------------------------------------------------
# fitted per-group values, for JSON
# ----------------------------------------------------------------------------------
def labelled_counts(values) -> dict[str, int]:
    """``GAP.n_train_`` (or any per-group counts) as ``{label: int}``."""
    return {label: int(v) for label, v in values.labelled().items()}


def noise_fields(model) -> dict:
    """The noise entries of a JSON result: ``noise``, ``{label: value}`` per group
    (``"forces"``, or ``"forces:<config_type>"`` with per-config_type noise), and
    ``noise_level``, ``{kind: value}`` for the kinds the model has (energy, forces,
    virial), the RMS over that kind's groups (:func:`gapkit.model.noise_level`)."""
    from gapkit.model import noise_level

    noise = model.noise_
    kinds = dict.fromkeys(group.kind for group in noise)
    return {"noise": {label: float(v) for label, v in noise.labelled().items()},
            "noise_level": {kind: noise_level(noise, kind) for kind in kinds}}
