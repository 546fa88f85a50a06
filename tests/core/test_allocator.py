"""Memory allocation settings: freed activation-sized blocks are reused, large torch tensors get huge pages.

Each case runs in a fresh interpreter (the settings are process-wide, and torch reads its own at
its first allocation) and counts the minor page faults of allocating, touching and freeing the
same block `ROUNDS` times.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from medlatent.core.allocator import HEAP_UP_TO_BYTES, TORCH_HUGE_PAGES

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

ROUNDS = 8
PAGE = 4096
HEAP_BLOCK = HEAP_UP_TO_BYTES * 3 // 4
LARGE_BLOCK = HEAP_UP_TO_BYTES * 2
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
# malloc itself, as torch's CPU allocator calls it (numpy would advise huge pages and fault less)
MEASURE = """
import ctypes, json, resource
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
{setup}
import torch
def faults(allocate):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range({rounds}):
        allocate()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
def malloc_block(nbytes):
    block = libc.malloc(nbytes)
    ctypes.memset(block, 1, nbytes)
    libc.free(block)
print(json.dumps({{
    "heap": faults(lambda: malloc_block({heap})),
    "large": faults(lambda: malloc_block({large})),
    "torch": faults(lambda: torch.empty({large} // 4).fill_(1.0)),
}}))
"""
SETUPS = {
    "default": "",
    "function": "from medlatent.core.allocator import tune_memory_allocation\ntune_memory_allocation()",
    # the CLI applies them before any command runs: `medlatent sources list` needs no data
    "cli": "from medlatent import cli\ncli.main(['sources', 'list'])",
}


def page_faults(setup: str) -> dict:
    script = MEASURE.format(setup=SETUPS[setup], rounds=ROUNDS, heap=HEAP_BLOCK, large=LARGE_BLOCK)
    environment = {key: value for key, value in os.environ.items() if key != TORCH_HUGE_PAGES}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=environment)
    return json.loads(result.stdout.splitlines()[-1])


def huge_pages_available() -> bool:
    return THP_MODE.exists() and "[never]" not in THP_MODE.read_text()


def test_freed_blocks_below_the_threshold_are_reused_and_larger_ones_return_to_the_kernel():
    default, tuned = page_faults("default"), page_faults("function")
    assert default["heap"] >= ROUNDS * HEAP_BLOCK // PAGE * 0.9  # glibc's default: every round faults it again
    assert tuned["heap"] <= 2 * HEAP_BLOCK // PAGE  # the first round only
    assert tuned["large"] >= ROUNDS * LARGE_BLOCK // PAGE * 0.9  # above the threshold: an mmap per round
    if huge_pages_available():
        assert default["torch"] >= ROUNDS * LARGE_BLOCK // PAGE * 0.9
        assert tuned["torch"] <= ROUNDS * LARGE_BLOCK // PAGE / 50  # a fault per 2 MiB, not per 4 KiB


def test_every_cli_command_runs_with_the_settings():
    tuned = page_faults("cli")
    assert tuned["heap"] <= 2 * HEAP_BLOCK // PAGE
    if huge_pages_available():
        assert tuned["torch"] <= ROUNDS * LARGE_BLOCK // PAGE / 50
