"""Keep freed memory in the process heap while the Sampler decodes on a CPU.

glibc hands every block above its mmap threshold (32 MiB at most) back to the system at
``free`` and maps fresh pages at the next allocation, which the kernel zeroes on first
touch. A decoding step allocates vocabulary-sized logits (rows x 49k floats: 47 MiB at
240 rows), so without this every step page-faults through that memory again. Inside
:func:`reuse_freed_memory` no allocation is mmapped and the heap is not trimmed; on
exit the free memory goes back to the system (``malloc_trim``) and the mmap threshold is
left at 32 MiB, the value glibc's own dynamic threshold reaches once a process has freed
a block that large (setting any of these options stops that adjustment).

Elsewhere than on glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
_MMAP_MAX_DEFAULT = 65536
_MMAP_THRESHOLD_AFTER = 32 * 2**20
_TRIM_THRESHOLD_AFTER = 2 * _MMAP_THRESHOLD_AFTER
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int


def _glibc():
    """glibc's handle, or None where malloc is not glibc's."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    if not all(hasattr(libc, name) for name in ("mallopt", "malloc_trim", "gnu_get_libc_version")):
        return None
    return libc


@contextlib.contextmanager
def reuse_freed_memory(enabled: bool = True):
    """While inside, freed blocks are reused instead of returned to the system (glibc)."""
    libc = _glibc() if enabled else None
    if libc is None or not libc.mallopt(M_MMAP_MAX, 0):
        yield
        return
    libc.mallopt(M_TRIM_THRESHOLD, _NEVER_TRIM)
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_MAX, _MMAP_MAX_DEFAULT)
        libc.mallopt(M_MMAP_THRESHOLD, _MMAP_THRESHOLD_AFTER)
        libc.mallopt(M_TRIM_THRESHOLD, _TRIM_THRESHOLD_AFTER)
        libc.malloc_trim(0)
