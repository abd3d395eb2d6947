"""Shared scaffolding of the benchmark scripts (not a benchmark itself).

The scripts in ``benchmarks/`` import this package (``import harness as h`` or
``from harness import ...``; it sits next to them, and ``python benchmarks/NAME.py`` puts
that folder first on ``sys.path``, so this works from any directory) and keep only their
own science. Every name below is re-exported here; the scripts import from ``harness``
only, never from its modules:

* :mod:`harness.cli`: argument types and the options that several scripts share; output:
  JSON results, settings, command line, temporary folders;
* :mod:`harness.datasets`: paths (``BENCH``, ``REPO``, ``SHARED_DATA``), data folders
  (``--data-dir`` / ``$GAPKIT_SHARED_DATA`` / ``<repo>/../shared/data``:
  :func:`resolve_data_dir`, :func:`find_data_dir`) and the small readers of the rMD17
  ethanol and mlearn Si sets used by more than one script;
* :mod:`harness.models`: the mlearn Si GAP (options, builder) and JSON views of a fitted
  model's per-group noises and row counts (:func:`noise_fields`, :func:`labelled_counts`);
* :mod:`harness.host`: peak RSS, thread pinning through the environment, load average,
  the host line;
* :mod:`harness.workers`: a benchmark re-invokes itself with a hidden ``--worker`` flag so
  that the peak RSS of each fit is its own (:func:`launch_worker`, :func:`worker_main`);
* :mod:`harness.timing`: :func:`best_of` (in-process) and :func:`alternate_ab` (two
  commands, A B A B);
* :mod:`harness.tables`: the gapkit-vs-QUIP comparison table and a markdown-table printer;
* :mod:`harness.quip`: whether quippy / ``gap_fit`` are usable, their version, the
  training extxyz, the ``gap_fit`` command line and its runner.

Nothing here imports numpy, ase or gapkit at import time, so a script's ``--help`` and its
thread settings (which must precede the numpy import) work before the heavy imports.
"""

from .cli import (add_noise_arguments, add_run_arguments, add_soap_arguments,
                  add_sparse_method_argument, command_line, int_list, new_parser,
                  parse_species_counts, save_results, settings, temp_dir)
from .datasets import (BENCH, ETHANOL_FILES, KBAR_PER_EV_A3, REPO, SHARED_DATA, SI_FILES,
                       STRESS_KEY, add_data_dir_argument, error_metrics, evenly_spaced, model_maes,
                       find_data_dir, isolated_energies, load_si, mlearn_matrix,
                       reference_labels, resolve_data_dir)
from .host import (THREAD_VARS, current_rss_mib, host_fields, host_line, loadavg, maxrss_mib,
                   set_thread_env, threadpool_info, worker_env)
from .models import (add_si_model_arguments, build_si_model, labelled_counts, noise_fields,
                     parse_delta, parse_e0)
from .quip import (QuipTimeout, cap_sparse_counts, gap_fit_command, gap_fit_executable,
                   quip_status, quip_version, quippy_available, run_gap_fit, write_quip_xyz)
from .tables import num, print_comparison, print_markdown_table
from .timing import alternate_ab, best_of
from .workers import launch_worker, worker_main

__all__ = [
    # cli
    "new_parser", "parse_species_counts", "int_list", "add_soap_arguments",
    "add_noise_arguments", "add_sparse_method_argument", "add_run_arguments",
    "command_line", "settings", "save_results", "temp_dir",
    # datasets
    "BENCH", "REPO", "SHARED_DATA", "ETHANOL_FILES", "SI_FILES", "STRESS_KEY",
    "KBAR_PER_EV_A3", "add_data_dir_argument", "resolve_data_dir", "find_data_dir",
    "evenly_spaced", "reference_labels", "isolated_energies", "error_metrics", "model_maes",
    "mlearn_matrix", "load_si",
    # models
    "add_si_model_arguments", "parse_delta", "parse_e0", "build_si_model",
    "labelled_counts", "noise_fields",
    # host
    "THREAD_VARS", "maxrss_mib", "current_rss_mib", "threadpool_info", "loadavg",
    "worker_env", "set_thread_env", "host_line", "host_fields",
    # workers, timing, tables
    "worker_main", "launch_worker", "best_of", "alternate_ab", "num", "print_comparison",
    "print_markdown_table",
    # quip
    "QuipTimeout", "gap_fit_executable", "quippy_available", "quip_status", "quip_version",
    "write_quip_xyz", "cap_sparse_counts", "gap_fit_command", "run_gap_fit",
]
