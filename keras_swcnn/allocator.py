"""Let this process reuse the memory it frees (glibc), instead of mapping fresh pages every step.

XLA's CPU runtime allocates the temporaries of a compiled training step (about
180 MB for the width-16 ResNet-18 at batch 128) as one block per step, from a
worker thread. glibc serves a block that large from a non-main arena with a
fresh ``mmap`` and returns it with ``munmap`` when freed, so every step
touches ~47,000 new pages: a page fault each (measured: 47,000 minor faults
and ~90 ms of system time per 275 ms step, for spatial and Winograd models
alike). With one arena, no ``mmap`` for large blocks and no trimming, the block
is reused: 0 faults per step, 215 ms. The same as running with
``MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...``; the
process keeps its peak heap until it exits, which suits a training process
and not every program, so this is opt-in: the ``swcnn`` training commands call
it; a script can too, before JAX or TensorFlow start their threads.

Example:
    >>> from keras_swcnn import allocator
    >>> allocator.keep_freed_memory()  # doctest: +SKIP
    True
"""

import ctypes
import sys

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
#: Freed memory at the top of the heap above this is returned to the system (1 GiB).
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory():
    """Configure glibc's malloc to keep and reuse freed blocks; True if it took effect.

    Returns False where the C library has no ``mallopt`` (not Linux/glibc;
    nothing changed) or refused a setting (those before it stay set). Threads
    started before the call keep their arenas.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
