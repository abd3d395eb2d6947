"""Timing: :func:`best_of` (in-process) and :func:`alternate_ab` (two commands, A B A B)."""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

from .host import loadavg, worker_env


def best_of(fn, repeats: int) -> tuple[float, list[float], list[float]]:
    """Best wall time of ``repeats`` calls of ``fn`` (after the caller's warm-up), the
    individual times and the 1-min load averages before/after."""
    times = []
    l0 = loadavg()
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), times, [l0, loadavg()]


def alternate_ab(cmd_a: list[str], cmd_b: list[str], rounds: int = 5, threads: int = 1,
                 cwd: Path | None = None) -> dict:
    """Wall time of two commands run alternately, A B A B ... (``rounds`` >= 5 pairs), each a
    fresh process with ``threads`` BLAS/OpenMP threads (through the environment), so that a
    drift of the machine's load hits both alike. Per command: median, min, max, all times."""
    env, _ = worker_env(threads)
    times = {"a": [], "b": []}
    for _ in range(max(5, rounds)):
        for key, cmd in (("a", cmd_a), ("b", cmd_b)):
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
            times[key].append(time.perf_counter() - t0)
    out = {k: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v), "times_s": v}
           for k, v in times.items()}
    out["ratio_b_over_a"] = out["b"]["median_s"] / out["a"]["median_s"]
    return out
