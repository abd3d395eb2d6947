"""Freed memory kept for reuse (glibc), so that repeated engine calls do not page-fault.

Every engine call allocates and frees temporaries of a few MB to tens of MB (per-pair
radial factors, harmonics, their gradients). With glibc's defaults such blocks are
mapped and unmapped on every call, and each new mapping is paid again in page faults:
on the development machine 1,900 faults per 64-atom Si call, 60 % of its CPU time.
:func:`keep_freed_memory` raises glibc's ``M_MMAP_THRESHOLD`` to 64 MiB and its
``M_TRIM_THRESHOLD`` to 256 MiB once per process (``mallopt``), so that these blocks
are served from the heap and reused: the freed memory (at most 256 MiB beyond the
peak) stays with the process. Set ``GAPKIT_KEEP_FREED_MEMORY=0`` to leave the
allocator alone. Nothing is done on other C libraries.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]

#: Allocations below this many bytes come from the heap (glibc ``M_MMAP_THRESHOLD``).
MMAP_THRESHOLD = 64 << 20
#: Free heap memory kept before it is returned to the system (``M_TRIM_THRESHOLD``).
TRIM_THRESHOLD = 256 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_state: dict = {}
_lock = threading.Lock()


def keep_freed_memory() -> bool:
    """Apply the glibc settings above once per process; whether they are in force.

    Returns ``False`` without glibc (``mallopt``), when ``GAPKIT_KEEP_FREED_MEMORY``
    is ``0``, or when ``mallopt`` refuses.
    """
    with _lock:
        if "applied" not in _state:
            _state["applied"] = _apply()
        return _state["applied"]


def _apply() -> bool:
    if os.environ.get("GAPKIT_KEEP_FREED_MEMORY", "1").strip() == "0":
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
