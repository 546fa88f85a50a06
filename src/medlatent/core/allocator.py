"""Memory allocation settings for compute jobs: reuse freed activation memory, huge pages for large tensors.

By default glibc serves every allocation above a dynamic threshold (at most 32 MiB) with a
fresh `mmap` and returns it to the kernel on free, so each forward of a network on the CPU
page-faults its activations in again, 4 KiB at a time. Two settings:

- glibc (`mallopt`): allocations up to `HEAP_UP_TO_BYTES` come from the heap, and the heap
  keeps what is freed for the next forward. Larger ones stay `mmap`s: with a 2 GiB threshold,
  one 1024^2 image through the f16 encoder (ch=128) peaked at 7.75 GB instead of 3.6 GB, its
  large activations fragmenting the heap, past what `latents.max_memory_gb` plans for.
- torch (`THP_MEM_ALLOC_ENABLE`): its CPU allocations of 2 MiB and more are aligned to and
  advised as transparent huge pages, one fault per 2 MiB (where the kernel's THP mode is
  `always` or `madvise`).

What they gain on each stage is measured by `make bench` (README, "Memory allocation").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

#: mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
HEAP_UP_TO_BYTES = 64 << 20
#: The heap's free top is never handed back: a job's memory stays at its peak, which it asked for anyway.
KEEP_FREED_BYTES = 2**31 - 1
#: Read by torch at its first CPU allocation; a value already in the environment is kept.
TORCH_HUGE_PAGES = "THP_MEM_ALLOC_ENABLE"


def tune_memory_allocation() -> dict:
    """Apply both settings to this process and its children; call before torch allocates anything.

    Returns what took effect: `glibc_heap_up_to_bytes` (None where libc is not glibc) and
    `torch_huge_pages`.
    """
    os.environ.setdefault(TORCH_HUGE_PAGES, "1")
    return {
        "glibc_heap_up_to_bytes": HEAP_UP_TO_BYTES if _apply_glibc_settings() else None,
        "torch_huge_pages": os.environ[TORCH_HUGE_PAGES] == "1",
    }


def _apply_glibc_settings() -> bool:
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):  # musl, macOS, Windows: no mallopt
        log.debug("no glibc mallopt: malloc settings left as they are")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, HEAP_UP_TO_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))
