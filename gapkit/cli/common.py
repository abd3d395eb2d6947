"""What the ``gapkit`` commands share: model and label flags, the default data, error lines.

Every ``--multi-word`` flag of every command also answers to ``--multi_word`` (the
spelling of MACE and nequip: ``--energy_key``, ``--valid_fraction``, ...): see
:func:`add_underscore_aliases`. Like every module of :mod:`gapkit.cli`, this one may
print: it is the user interface.
"""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path
from typing import Sequence

from gapkit.data import default_data_dir
from gapkit.data.reference import parse_e0
from gapkit.descriptors import ACSF
from gapkit.gp.terms import (DEFAULT_RADIAL_SCALING, DEFAULT_RADIAL_SCALING_R0,
                              DEFAULT_TWO_BODY_SPARSE, default_soap, default_terms)
from gapkit.model import GAP
from gapkit.model.params import check_n_sparse


def parse_n_sparse(text: str) -> int | dict[str, int] | str:
    """``auto``, ``1000`` or ``C:1000,H:2000,O:500``; ``ValueError`` with the expected
    form otherwise (counts must be positive integers, symbols known)."""
    text = str(text).strip()
    form = "auto, N or SYMBOL:N,SYMBOL:N (e.g. 1000 or C:1000,H:2000), N a positive integer"
    if text == "auto":
        return text
    try:
        if ":" not in text:
            out: int | dict[str, int] = int(text)
        else:
            out = {}
            for part in text.split(","):
                sym, val = part.split(":")
                out[sym.strip()] = int(val)
        check_n_sparse(out, "--n-sparse")
    except ValueError as exc:
        detail = str(exc) if str(exc).startswith("--n-sparse") else f"got {text!r}"
        raise ValueError(f"{detail}; expected {form}") from None
    return out


def _n_sparse_type(text: str):
    """:func:`parse_n_sparse` for argparse (a usage error, no internal names)."""
    try:
        return parse_n_sparse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None



#: The attribute of an argparse action that lists its underscore aliases.
ALIASES_ATTR = "_gapkit_aliases"


class _AliasHiding:
    """Help formatter mixin: the underscore aliases are accepted but not listed."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        hidden = getattr(action, ALIASES_ATTR, ())
        if hidden:
            action = copy.copy(action)
            action.option_strings = [s for s in action.option_strings if s not in hidden]
        return super()._format_action_invocation(action)


class _BooleanOptional(argparse.BooleanOptionalAction):
    """``--flag/--no-flag`` whose ``--no_flag`` alias also means False (argparse's own
    class tests for ``--no-`` only), with the aliases left out of the usage line."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in self.option_strings:
            setattr(namespace, self.dest, not option_string.startswith(("--no-", "--no_")))

    def format_usage(self) -> str:
        hidden = getattr(self, ALIASES_ATTR, ())
        return " | ".join(s for s in self.option_strings if s not in hidden)


def add_underscore_aliases(p: argparse.ArgumentParser) -> list[str]:
    """Let every ``--multi-word`` flag of ``p`` also be spelled ``--multi_word``.

    The alias is one more option string of the same action (same ``dest``, type,
    choices and default), so the two spellings cannot disagree and config files,
    which are keyed by ``dest``, read either. Help lists only the dashed spelling.

    Parameters
    ----------
    p : argparse.ArgumentParser
        A (sub-)parser whose flags are all added.

    Returns
    -------
    list of str
        The aliases added.
    """
    added = []
    for action in p._actions:
        for opt in list(action.option_strings):
            alias = "--" + opt[2:].replace("-", "_")
            if not opt.startswith("--") or alias == opt or alias in p._option_string_actions:
                continue
            if type(action) is argparse.BooleanOptionalAction:
                action.__class__ = _BooleanOptional
            action.option_strings.append(alias)
            p._option_string_actions[alias] = action
            setattr(action, ALIASES_ATTR, (*getattr(action, ALIASES_ATTR, ()), alias))
            added.append(alias)
    if not issubclass(p.formatter_class, _AliasHiding):
        p.formatter_class = type(f"AliasHiding{p.formatter_class.__name__}",
                                 (_AliasHiding, p.formatter_class), {})
    return added


def _positive_float(text: str) -> float:
    """A number > 0 for argparse."""
    try:
        val = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not val > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return val


def _non_negative_float(text: str) -> float:
    """A finite number >= 0 for argparse (``--radial-scaling``)."""
    try:
        val = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (val >= 0 and val != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0 (0: no radial "
                                         f"scaling), got {text!r}")
    return val


def _non_negative_int(text: str) -> int:
    """An integer >= 0 for argparse (``--two-body``)."""
    try:
        val = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if val < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 (0: no 2-body term), "
                                         f"got {text!r}")
    return val


def _n_jobs_type(text: str) -> int:
    """A non-zero integer (joblib's convention: -1 all cores, -2 all but one)."""
    try:
        val = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if val == 0:
        raise argparse.ArgumentTypeError("0 workers cannot run: give N >= 1, or -1 for all cores")
    return val


def _variance_sparse_type(text: str):
    """``auto``, ``all`` or a positive integer (``--variance-sparse``)."""
    if text in ("auto", "all"):
        return text
    try:
        val = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto', 'all' or a positive integer, got "
                                         f"{text!r}") from None
    if val < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto', 'all' or a positive integer, got "
                                         f"{text!r}")
    return val


def _auto_or_float(text: str):
    """``auto`` or a positive number (``--delta``, ``--virial-noise``)."""
    if text == "auto":
        return text
    try:
        val = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {text!r}") from None
    if not val > 0:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive number, got {text!r}")
    return val


def add_label_keys(p: argparse.ArgumentParser) -> None:
    """The ``--energy-key``, ``--forces-key`` and ``--virial-key`` flags.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The (sub-)parser to add them to.
    """
    p.add_argument("--energy-key", default=None,
                   help="info key of the reference energy (default: calculator results, then 'energy')")
    p.add_argument("--forces-key", default=None,
                   help="array key of the reference forces (default: calculator results, then 'forces')")
    p.add_argument("--virial-key", default=None,
                   help="info key of the reference virial (eV, 3x3 or 6 Voigt values); only "
                        "this key is read (default: 'virial', else the stress of the file)")
    p.add_argument("--stress-key", default=None,
                   help="info key of a reference stress in eV/Å³ (e.g. MACE's REF_stress), "
                        "turned into the virial -stress x volume")
    p.add_argument("--no-virials", action="store_true",
                   help="ignore virial and stress labels")


def apply_label_keys(model: GAP, args: argparse.Namespace) -> None:
    """Set the label keys of the :func:`add_label_keys` flags that were given on a
    (loaded) model."""
    for name in ("energy_key", "forces_key", "virial_key", "stress_key"):
        if getattr(args, name, None):
            setattr(model, name, getattr(args, name))
    if getattr(args, "virial_key", None):
        model.stress_key = None
    elif getattr(args, "stress_key", None):
        model.virial_key = None
    if getattr(args, "no_virials", False):
        model.use_virials = False


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The SOAP, GP and label flags shared by ``fit`` and ``learning-curve``.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The (sub-)parser to add them to; :func:`model_from_args` reads them back.
    """
    p.add_argument("--e0", default=None,
                   help="'lstsq', 'average' (mean energy per atom for all species), 'zero', "
                        "'isolated' (single-atom frames in TRAIN), a path to an isolated-atoms "
                        "extxyz, or SYMBOL:eV,... such as H:-13.6,C:-1029.8 (default: lstsq; "
                        "data/isolated_atoms.xyz for the default data)")
    p.add_argument("--descriptor", default="soap", choices=["soap", "acsf"],
                   help="many-body descriptor: SOAP (default) or Behler-Parrinello ACSF")
    p.add_argument("--two-body", type=_non_negative_int, default=DEFAULT_TWO_BODY_SPARSE,
                   metavar="N",
                   help="the 2-body (distance) term beside the many-body one, GAP's 2b+SOAP: "
                        f"N sparse points per species at zeta=1, cutoff --r-cut (default "
                        f"{DEFAULT_TWO_BODY_SPARSE}; 0: the many-body descriptor alone)")
    p.add_argument("--r-cut", type=float, default=5.0, help="descriptor cutoff, Å (default 5.0)")
    p.add_argument("--n-max", type=int, default=8, help="SOAP radial functions (default 8)")
    p.add_argument("--l-max", type=int, default=6, help="SOAP angular channels (default 6)")
    p.add_argument("--sigma", type=float, default=0.5, help="SOAP Gaussian width, Å (default 0.5)")
    p.add_argument("--cutoff-width", type=_positive_float, default=None, metavar="Å",
                   help="width of SOAP's smooth (cosine) cutoff, from r_cut - width to r_cut "
                        "(QUIP's cutoff_transition_width; default: SOAP's 1.0 Å)")
    p.add_argument("--radial-scaling", type=_non_negative_float,
                   default=DEFAULT_RADIAL_SCALING, metavar="M",
                   help="SOAP radial scaling exponent: each neighbour's density is weighed "
                        "by u(r) = 2 / (1 + (r / r0)^M) (default "
                        f"{DEFAULT_RADIAL_SCALING:g}; 0: none, DScribe's plain SOAP)")
    p.add_argument("--radial-scaling-r0", type=_positive_float,
                   default=DEFAULT_RADIAL_SCALING_R0, metavar="Å",
                   help="r0 of the radial scaling, where u = 1 (default "
                        f"{DEFAULT_RADIAL_SCALING_R0:g} Å, whatever --r-cut is)")
    p.add_argument("--zeta", type=float, default=4.0, help="kernel exponent (default 4)")
    p.add_argument("--delta", type=_auto_or_float, default="auto",
                   help="signal scale in eV, or 'auto' (default)")
    p.add_argument("--n-sparse", type=_n_sparse_type, default="auto",
                   help="sparse points per species: auto (default: every environment up to "
                        "2000 per species, then a quarter, within file/memory budgets), N "
                        "or C:1000,H:2000")
    p.add_argument("--sparse-method", default="cur", choices=["cur", "random", "fps"])
    p.add_argument("--energy-noise", type=float, default=0.001, help="eV per sqrt(atom) (default 0.001)")
    p.add_argument("--force-noise", type=float, default=0.02, help="eV/Å (default 0.02)")
    p.add_argument("--virial-noise", type=_auto_or_float, default="auto",
                   help="eV per sqrt(atom), or 'auto' (default): force noise x (V/N)^(1/3)")
    p.add_argument("--noise-by-config-type", action="store_true",
                   help="one noise per (label kind, config_type) instead of per kind; "
                        "use with --optimize, which learns each (without it they all keep "
                        "the kind's noise)")
    p.add_argument("--optimize", action="store_true",
                   help="learn delta and the noises by maximum marginal likelihood")
    p.add_argument("--n-jobs", type=_n_jobs_type, default=None, metavar="N",
                   help="threads computing the descriptors and training rows "
                        "(default or -1: every core; 1: serial, multi-threaded BLAS)")
    p.add_argument("--valid-fraction", type=float, default=0.2,
                   help="fraction of the training frames held out to calibrate the std "
                        "(added back to the fit afterwards; default 0.2)")
    p.add_argument("--no-calibrate", action="store_true",
                   help="keep the raw (uncalibrated) DTC std")
    p.add_argument("--force-std", default="exact", choices=["fast", "exact"],
                   help="force stds of predict/evaluate: every component (exact, default) or "
                        "per atom from the local-energy variances (fast, calibrated models)")
    p.add_argument("--variance-sparse", type=_variance_sparse_type, default="auto", metavar="N",
                   help="sparse points of the std: the DTC std of the sub-model on N of the M "
                        "sparse points, chosen by pivoted Cholesky (cost O(N^2) per atom "
                        "instead of O(M^2)); auto (default: min(M, 1000)), N, or all (exact)")
    add_label_keys(p)


def default_data() -> tuple[list[str], list[str], str]:
    """The project's default data: training files, test files and the isolated-atoms file."""
    d = default_data_dir()
    return [str(d / "train.xyz")], [str(d / "test.xyz")], str(d / "isolated_atoms.xyz")


def resolve_training_files(train: list[str] | None, test: list[str] | None,
                           e0: str | None) -> tuple[list[str], list[str] | None, str]:
    """Training files, test files and E0 spec, falling back to the default data.

    Parameters
    ----------
    train : list of str or None
        Training extxyz files; empty or None: the default data (announced on stdout).
    test : list of str or None
        Test extxyz files; None with the default data: its test file.
    e0 : str or None
        The ``--e0`` value; None: the default data's isolated atoms, else ``"lstsq"``.

    Returns
    -------
    train : list of str
    test : list of str or None
    e0 : str
    """
    train = list(train or [])
    if not train:
        train, default_test, iso = default_data()
        test = default_test if test is None else test
        e0 = e0 or (iso if Path(iso).is_file() else "lstsq")
        print(f"Using the default data: {train[0]}")
    return train, test, e0 or "lstsq"


def model_from_args(args: argparse.Namespace, e0: str, verbose: bool | None = None) -> GAP:
    """A :class:`gapkit.GAP` configured from the flags of :func:`add_model_arguments`.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed flags, with ``seed`` (the model's ``random_state``).
    e0 : str
        The E0 spec (see :func:`resolve_training_files`).
    verbose : bool, optional
        Progress bars of the fit (None: :mod:`gapkit.progress` decides: a terminal,
        Jupyter, or ``GAPKIT_PROGRESS``, which ``--progress/--no-progress`` set).

    Returns
    -------
    GAP
        Unfitted.
    """
    delta = args.delta
    width = getattr(args, "cutoff_width", None)
    scaling = getattr(args, "radial_scaling", DEFAULT_RADIAL_SCALING)
    if getattr(args, "descriptor", "soap") == "acsf":
        if width is not None:
            raise ValueError("--cutoff-width is SOAP's smooth cutoff; ACSF has its own cosine "
                             "cutoff over the whole of r_cut: leave --cutoff-width out")
        if scaling not in (0, DEFAULT_RADIAL_SCALING):
            raise ValueError("--radial-scaling is SOAP's; ACSF has no radial scaling: leave "
                             "--radial-scaling out (or give 0)")
        descriptor = ACSF(r_cut=args.r_cut)
    else:
        r0 = getattr(args, "radial_scaling_r0", DEFAULT_RADIAL_SCALING_R0)
        descriptor = default_soap(r_cut=args.r_cut, n_max=args.n_max, l_max=args.l_max,
                                  sigma=args.sigma, radial_scaling=scaling,
                                  **({"radial_scaling_r0": r0} if scaling else {}),
                                  **({} if width is None else {"cutoff_width": width}))
    two_body = getattr(args, "two_body", DEFAULT_TWO_BODY_SPARSE)
    if two_body:
        descriptor = default_terms(descriptor, two_body)
    return GAP(descriptor,
               zeta=args.zeta, delta=delta, n_sparse=args.n_sparse,
               sparse_method=args.sparse_method, energy_noise=args.energy_noise,
               force_noise=args.force_noise, virial_noise=args.virial_noise, e0=parse_e0(e0),
               optimize=args.optimize, noise_by_config_type=getattr(args, "noise_by_config_type", False),
               n_jobs=getattr(args, "n_jobs", None), energy_key=args.energy_key, forces_key=args.forces_key,
               virial_key=args.virial_key, stress_key=args.stress_key,
               use_virials=not args.no_virials, random_state=args.seed,
               calibrate=not getattr(args, "no_calibrate", False),
               valid_fraction=getattr(args, "valid_fraction", 0.2),
               force_std=getattr(args, "force_std", "exact"),
               variance_sparse=getattr(args, "variance_sparse", "auto"), verbose=verbose)


def format_errors(name: str, m: dict) -> str:
    """One line of energy (meV, meV/atom) and force (meV/Å) errors of :func:`gapkit.metrics.error_metrics`."""
    s = (f"{name:>5}: {m['n_structures']} structures | E MAE {1000 * m['energy_mae']:.2f} meV "
         f"(RMSE {1000 * m['energy_rmse']:.2f}), {1000 * m['energy_mae_per_atom']:.2f} meV/atom")
    if m.get("n_force_components"):
        s += f" | F MAE {1000 * m['forces_mae']:.1f} meV/Å (RMSE {1000 * m['forces_rmse']:.1f})"
    return s


def check_output_path(output: str, inputs: Sequence[str] = ()) -> None:
    """Raise ``ValueError`` before any work if ``output`` is one of the ``inputs``, is a
    folder, or its folder cannot be written."""
    out = Path(output)
    for item in inputs:
        if Path(item).exists() and out.exists() and out.resolve() == Path(item).resolve():
            raise ValueError(f"output '{output}' is also an input: choose another -o path "
                             "(no command overwrites its own input)")
    if out.is_dir():
        raise ValueError(f"output '{output}' is a directory: give a file name")
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise ValueError(f"cannot write to '{parent}' (permission denied): choose another -o path")
