"""Keep glibc's allocator from handing freshly freed buffers back to the kernel.

A node moves data in pieces of 100-200 KiB (storage pieces, their CBOR messages, AEAD
ciphertexts), each allocated and freed a few times on its way. With glibc's defaults a freed
block at the top of the heap (or a block over the mmap threshold) goes back to the kernel at
once, so the next piece of the same size page-faults its way in again: measured here, copying
171 KiB took 120 us that way against 7 us once the memory stays with the process, and that
turned every copy of a store transfer into the largest cost of the transfer.

So a node asks glibc (``mallopt``) to serve blocks under 4 MiB from the heap and to keep up to
32 MiB of free memory at the top of a heap before trimming it. What that costs: each arena
(the main one, and one per thread that allocates: worker pools, a get's writer) may keep up to
that much it no longer uses, and glibc no longer adjusts its mmap threshold by itself. On a C
library without ``mallopt`` (musl, macOS, Windows) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("qiz")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20  # blocks below this come from the heap, not from fresh mmaps
TRIM_THRESHOLD = 32 << 20  # free heap kept before it is returned to the kernel


def tune_allocator() -> bool:
    """Apply the settings above to this process; True when glibc took them."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # TypeError: CDLL(None) on Windows
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    if not ok:
        log.debug("mallopt refused the allocator settings")
    return ok
