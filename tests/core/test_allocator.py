"""glibc malloc settings: freed activation-sized blocks are reused, not page-faulted in again; huge ones stay mmaps.

Each case runs in a fresh interpreter (the settings are process-wide) and counts the minor page
faults of allocating, touching and freeing the same array twenty times.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from medlatent.core.allocator import HEAP_UP_TO_BYTES

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

ROUNDS = 20
# malloc itself, as torch's CPU allocator calls it (numpy would madvise huge pages and fault less)
MEASURE = """
import ctypes, json, resource
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
{setup}
def faults(nbytes):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range({rounds}):
        block = libc.malloc(nbytes)
        ctypes.memset(block, 1, nbytes)
        libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({{"applied": applied, "heap": faults({heap}), "huge": faults({huge})}}))
"""
SETUPS = {
    "default": "applied = None",
    "function": "from medlatent.core.allocator import keep_freed_memory\napplied = keep_freed_memory()",
    # the CLI applies them before any command runs: `medlatent sources` exits early without arguments
    "cli": "from medlatent import cli\ncli.main(['sources', 'list'])\napplied = None",
}


def page_faults(setup: str) -> dict:
    heap_block, huge_block = HEAP_UP_TO_BYTES * 3 // 4, HEAP_UP_TO_BYTES * 2
    script = MEASURE.format(setup=SETUPS[setup], rounds=ROUNDS, heap=heap_block, huge=huge_block)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def test_blocks_below_the_threshold_are_reused_and_larger_ones_still_return_to_the_kernel():
    pages = (HEAP_UP_TO_BYTES * 3 // 4) // 4096
    default, applied = page_faults("default"), page_faults("function")
    assert applied["applied"] is True
    assert default["heap"] >= ROUNDS * pages * 0.9  # glibc's default: every round faults the block in again
    assert applied["heap"] <= 2 * pages  # the first round only
    assert applied["huge"] >= ROUNDS * 2 * pages * 0.9  # above the threshold: still an mmap per round


def test_every_cli_command_runs_with_the_settings():
    assert page_faults("cli")["heap"] <= 2 * (HEAP_UP_TO_BYTES * 3 // 4) // 4096
