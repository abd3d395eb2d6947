"""Config files for ``gapkit fit --config FILE`` and ``--dump-config``.

A config file is a YAML (``.yaml``/``.yml``, read with PyYAML when it is installed)
or JSON mapping whose keys are the ``dest`` names of the command's flags
(``n_sparse``, ``r_cut``, ``energy_key``, ``train``, ``output``, ...; hyphens are
accepted for underscores, as flags accept underscores for hyphens), plus the global
``log_file`` and ``progress``. Flags given on the command line override the file; the
file overrides the defaults. ``--dump-config`` prints the resolved mapping as JSON
(which YAML reads too) and exits, so ``gapkit fit ... --dump-config > fit.json``
writes a config that reproduces the run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: dests that are not part of a config (the parser's own and the verbosity flags).
NOT_CONFIG = ("help", "config", "dump_config", "verbose", "quiet")
#: the namespace attribute that carries the true defaults to :func:`resolve`.
DEFAULTS_ATTR = "_config_defaults"
#: keys of the global flags (:mod:`gapkit.cli.app`: ``--log-file PATH``,
#: ``--progress/--no-progress``) that a config may set too, with their defaults.
GLOBAL_KEYS = {"log_file": None, "progress": None}


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--config`` and ``--dump-config``, then make every other flag's default
    absent from the namespace (its true default goes to :func:`resolve`), so that
    flags given on the command line can be told from defaults.

    Call it after every other argument of ``p`` is added.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The sub-parser.
    """
    p.add_argument("--config", default=None, metavar="FILE",
                   help="read flags from a YAML or JSON file (keys: the flag names with "
                        "underscores, e.g. n_sparse, r_cut, train); command-line flags win")
    p.add_argument("--dump-config", action="store_true",
                   help="print the resolved config as JSON (also valid YAML) and exit")
    defaults = {}
    for action in p._actions:
        if action.dest in NOT_CONFIG or action.dest == argparse.SUPPRESS:
            continue
        defaults[action.dest] = action.default
        action.default = argparse.SUPPRESS
    p.set_defaults(**{DEFAULTS_ATTR: (defaults, p)})


def load_config(path: str | Path) -> dict:
    """The mapping of a YAML or JSON config file.

    Raises
    ------
    ValueError
        If the file is not a mapping, cannot be parsed, or is YAML without PyYAML.
    """
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml  # optional dependency
        except ImportError:
            raise ValueError(f"'{path}' is YAML but PyYAML is not installed: pip install "
                             "pyyaml, or write the config as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"cannot parse the config '{path}': {exc}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"cannot parse the config '{path}' as JSON: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"the config '{path}' must be a mapping of flag names to values")
    return data


def _convert(action: argparse.Action, key: str, value, path) -> object:
    """A config value checked and converted as argparse would convert the flag."""
    def one(v):
        if isinstance(v, str) and action.type is not None:
            try:
                v = action.type(v)
            except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
                raise ValueError(f"config '{path}': {key}: {exc}") from None
        elif action.type in (int, float) and not isinstance(v, bool):
            try:
                v = action.type(v)
            except (ValueError, TypeError):
                raise ValueError(f"config '{path}': {key} must be a number, got {v!r}") from None
        if action.choices is not None and v not in action.choices:
            raise ValueError(f"config '{path}': {key} must be one of "
                             f"{sorted(action.choices)}, got {v!r}")
        return v

    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ValueError(f"config '{path}': {key} must be true or false, got {value!r}")
        return value
    if action.nargs in ("*", "+") :
        if value is None:
            return None
        values = [value] if isinstance(value, str) else list(value)
        return [one(v) for v in values]
    return one(value)


def _convert_global(dest: str, key: str, value, path) -> object:
    """A :data:`GLOBAL_KEYS` value checked: a path (str) for ``log_file``, true, false
    or null for ``progress``."""
    if value is None:
        return None
    if dest == "progress" and not isinstance(value, bool):
        raise ValueError(f"config '{path}': {key} must be true, false or null, got {value!r}")
    if dest == "log_file" and not isinstance(value, str):
        raise ValueError(f"config '{path}': {key} must be a file path, got {value!r}")
    return value


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with every flag filled: command line, then ``--config``, then defaults.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by a parser prepared with :func:`add_config_arguments`.

    Returns
    -------
    argparse.Namespace
        A new namespace without the helper attribute.

    Raises
    ------
    ValueError
        On unknown keys or values of the wrong kind in the config file.
    """
    given = vars(args).copy()
    defaults, parser = given.pop(DEFAULTS_ATTR)
    actions = {a.dest: a for a in parser._actions if a.dest in defaults}
    resolved = {**defaults, **GLOBAL_KEYS}
    path = given.get("config")
    if path:
        for key, value in load_config(path).items():
            dest = str(key).replace("-", "_")
            if dest in GLOBAL_KEYS:
                resolved[dest] = _convert_global(dest, key, value, path)
                continue
            if dest not in actions:
                raise ValueError(f"config '{path}': unknown key {key!r}; known keys: "
                                 + ", ".join(sorted([*actions, *GLOBAL_KEYS])))
            resolved[dest] = _convert(actions[dest], key, value, path)
    resolved.update(given)
    return argparse.Namespace(**resolved)


def config_of(args: argparse.Namespace) -> dict:
    """The config mapping of resolved ``args`` (JSON-able; what ``--dump-config`` prints)."""
    return {k: v for k, v in vars(args).items()
            if k not in NOT_CONFIG and k != "command" and not k.startswith("_")}
