"""This process and its host: peak / current RSS, BLAS thread pools and the thread
variables of subprocesses, load average, the host line of a report."""

from __future__ import annotations

import os
import platform
import resource
import sys

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def maxrss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak RSS (MiB) of this process or, with ``RUSAGE_CHILDREN``, of its largest child."""
    r = resource.getrusage(who).ru_maxrss  # KiB on Linux, bytes on macOS
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0


def current_rss_mib() -> float | None:
    try:
        with open("/proc/self/status") as fh:
            return next(int(x.split()[1]) / 1024.0 for x in fh if x.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None


def threadpool_info() -> list | None:
    try:
        from threadpoolctl import threadpool_info as info
        return [{k: d.get(k) for k in ("internal_api", "num_threads")} for d in info()]
    except Exception:  # noqa: BLE001 - purely informational
        return None


def loadavg() -> float:
    return float(os.getloadavg()[0])


def worker_env(threads: int | None) -> tuple[dict, dict]:
    """Environment for subprocesses (``threads`` > 0 pins the BLAS/OpenMP threads) and the
    resulting thread variables."""
    env = dict(os.environ)
    if threads and threads > 0:
        for var in THREAD_VARS:
            env[var] = str(threads)
    return env, {v: env.get(v) for v in THREAD_VARS}


def set_thread_env(threads: int | None) -> dict:
    """Pin this process's BLAS/OpenMP threads (call before numpy is imported)."""
    env, pinned = worker_env(threads)
    os.environ.update({k: v for k, v in pinned.items() if v is not None})
    return pinned


def host_line(threads: dict) -> str:
    return (f"host: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}; thread env {threads}")


def host_fields(threads: dict | None = None) -> dict:
    """The host entries of a JSON result."""
    return {"host": platform.node(), "cpus": os.cpu_count(),
            "thread_env": threads if threads is not None else {v: os.environ.get(v) for v in THREAD_VARS}}
