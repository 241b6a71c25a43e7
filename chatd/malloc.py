"""Large buffers go back to the system when they are freed.

glibc's malloc serves blocks above its mmap threshold (128 KiB) with mmap(2), which free()
returns at once; but each time it frees such a block it raises the threshold to that block's
size (up to 32 MiB). After the first multi-megabyte reply to a slow consumer is freed, the next
ones come from the heap, where a small block allocated above them keeps the whole span in RSS
after the peer is dropped (the RSS check in tests/e2e/test_backpressure.py saw 60 MB stay).
Setting the threshold explicitly turns that adjustment off.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
THRESHOLD = 128 * 1024  # glibc's own default


def keep_large_blocks_mapped() -> bool:
    """Fix glibc's mmap threshold; False where the C library has no mallopt (not glibc)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, THRESHOLD) == 1
