"""glibc's malloc told to keep the memory a process frees, for the process to use again, instead of handing it back
to the kernel at once.

Reading a large dataset builds a block's rows (tens of megabytes of objects), frees them, and builds the next
block's. Left as it is, glibc gives the freed top of its heap back to the kernel (past a threshold of 128 KB, raised
to at most 64 MB as it goes), and the next block takes the pages again, each zeroed by the kernel on first touch: a
process that builds and frees 30 MB of 1 KB objects ten times takes 75,000 page faults, against 7,800 with these
settings (``tests/reading/test_allocator.py``). Planning 1,000,000 rows (``benchmarks/plan_scale.py``) took 1.7 million
page faults over its processes, 4.8-6.4 s of system time; with these settings 1.1-1.2 million and 3.7-4.3 s, for
40-70 MB more resident at the peak (2026-12-07).

Elsewhere (musl, macOS, Windows) there is no ``mallopt`` to call, and nothing changes.
"""

from __future__ import annotations

import os
import sys

# mallopt's parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 64 << 20  # allocations up to this come from the heap, where freed memory is used again
TRIM_THRESHOLD = 128 << 20  # freed memory at the top of the heap kept up to this
TOP_PAD = 64 << 20  # the heap grows by this much more than asked, so that it grows less often


def keep_freed_memory() -> bool:
    """Set the thresholds above in this process; True where they were set (glibc), False elsewhere."""
    if not sys.platform.startswith("linux") or not _is_glibc():
        return False
    import ctypes  # here: a process that reads nothing large does not pay for the import

    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this interpreter runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD))
    accepted = [mallopt(param, value) == 1 for param, value in settings]  # each tried, whatever the others did
    return all(accepted)


def _is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):
        return False
