"""Concrete GPUs for a job that declared `resources: gpu=N`.

Snakemake only counts GPUs (`--resources gpu=8` caps the sum over running jobs); it never
says WHICH devices a job may use, so two concurrent local jobs would both pick device 0.
`acquire(n)` hands out disjoint devices with one lock file per device slot (fcntl `flock`,
so a killed job frees its slots with its last open descriptor) and a mutex file that makes
taking several slots atomic. It blocks until `n` slots are free, then the job sees only its
devices through CUDA_VISIBLE_DEVICES.

Slots: $MEDLATENT_FAKE_GPUS (a count, for tests) > the entries of CUDA_VISIBLE_DEVICES >
torch.cuda.device_count() (NVML based: it does not initialise CUDA, so the variable set here
still takes effect). No slot (CPU-only machine) or `n == 0`: the job runs on the CPU.
Inside a SLURM job (SLURM_JOB_ID set) SLURM has already bound devices: this steps aside.
Lock directory: $MEDLATENT_GPU_LOCK_DIR, else one per user in the temp directory, because
GPUs are shared by every workflow on the machine, not per working directory.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

FAKE_ENV = "MEDLATENT_FAKE_GPUS"
LOCK_DIR_ENV = "MEDLATENT_GPU_LOCK_DIR"
VISIBLE = "CUDA_VISIBLE_DEVICES"
#: Seconds between attempts while every wanted slot is busy (jittered).
POLL_SECONDS = 0.2


@dataclass
class Grant:
    """Devices given to a job: ids as CUDA_VISIBLE_DEVICES spells them (empty: CPU)."""

    devices: list[str]
    source: str
    _fds: list[int] = field(default_factory=list, repr=False)

    @property
    def count(self) -> int:
        return len(self.devices)

    def environment(self) -> dict[str, str]:
        """Variables a child process needs to see exactly these devices."""
        return {VISIBLE: ",".join(self.devices)}

    def torch_device(self):
        """CUDA when devices were granted and CUDA works here; else the CPU (fake or driverless GPUs)."""
        import torch  # imported late, as in device_slots: the lock logic needs no torch

        return torch.device("cuda" if self.devices and torch.cuda.is_available() else "cpu")

    def lock_fds(self) -> list[int]:
        """Descriptors holding the slot locks: pass them to children so a lock outlives a killed parent."""
        return list(self._fds)


def lock_dir() -> Path:
    configured = os.environ.get(LOCK_DIR_ENV)
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"medlatent-gpu-locks-{os.getuid()}"


def device_slots() -> tuple[list[str], str]:
    """The device ids that can be handed out and where that list came from."""
    fake = os.environ.get(FAKE_ENV)
    if fake:
        return [str(i) for i in range(int(fake))], FAKE_ENV
    visible = os.environ.get(VISIBLE)
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"], VISIBLE
    import torch

    return [str(i) for i in range(torch.cuda.device_count())], "torch.cuda.device_count()"


def _slot_file(directory: Path, device: str) -> Path:
    return directory / f"slot-{re.sub(r'[^A-Za-z0-9_.-]', '_', device)}.lock"


def _try_slots(directory: Path, devices: list[str], wanted: int) -> tuple[list[str], list[int]] | None:
    """Take `wanted` free slots without blocking, or none at all."""
    taken: list[tuple[str, int]] = []
    for device in devices:
        fd = os.open(_slot_file(directory, device), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        taken.append((device, fd))
        if len(taken) == wanted:
            return [d for d, _ in taken], [f for _, f in taken]
    for _, fd in taken:
        os.close(fd)
    return None


def _lock_slots(devices: list[str], wanted: int, timeout: float | None) -> tuple[list[str], list[int]]:
    directory = lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    mutex_path = directory / "allocator.lock"
    started, announced = time.monotonic(), False
    while True:
        with open(mutex_path, "a+") as mutex:
            fcntl.flock(mutex, fcntl.LOCK_EX)
            got = _try_slots(directory, devices, wanted)
        if got is not None:
            return got
        if timeout is not None and time.monotonic() - started > timeout:
            raise TimeoutError(f"no {wanted} free GPU slot(s) of {devices} within {timeout} s (locks in {directory})")
        if not announced:
            log.info("waiting for %d free GPU slot(s) of %s (locks in %s)", wanted, devices, directory)
            announced = True
        time.sleep(POLL_SECONDS * (0.5 + random.random()))


def acquire(wanted: int, timeout: float | None = None) -> Grant:
    """Lock `wanted` GPU slots (fewer when the machine has fewer) and return them; [] = CPU.

    The caller must `release` the grant (or use `granted`). A request larger than the
    machine is cut to what exists: training keeps its global batch by accumulating.
    """
    if os.environ.get("SLURM_JOB_ID"):
        devices, source = device_slots()
        return Grant(devices[:wanted] if wanted else [], f"SLURM job {os.environ['SLURM_JOB_ID']} ({source})")
    if wanted <= 0:
        return Grant([], "0 GPUs requested")
    devices, source = device_slots()
    if not devices:
        return Grant([], f"no GPU ({source})")
    if wanted > len(devices):
        log.warning("%d GPU(s) requested but %d exist (%s): using %d", wanted, len(devices), source, len(devices))
        wanted = len(devices)
    chosen, fds = _lock_slots(devices, wanted, timeout)
    return Grant(chosen, source, fds)


def release(grant: Grant) -> None:
    for fd in grant._fds:
        os.close(fd)
    grant._fds.clear()


@contextmanager
def granted(wanted: int, timeout: float | None = None) -> Iterator[Grant]:
    """`acquire` for a block; the slots are freed when it ends (or the process dies)."""
    grant = acquire(wanted, timeout)
    try:
        yield grant
    finally:
        release(grant)


@contextmanager
def job_device(threads: int, wanted: int) -> Iterator:
    """The torch device of a compute job: the GPUs granted to it (locked for the block), else the CPU.

    Args:
        threads: CPU threads of the job (torch's intra-op threads).
        wanted: GPUs to lock; 0 runs on the CPU.
    """
    import torch

    torch.set_num_threads(max(1, threads))
    with granted(wanted) as grant:
        os.environ.update(grant.environment())  # before CUDA starts: the job sees only its devices
        yield grant.torch_device()


def run_with_gpus(wanted: int, command: list[str]) -> int:
    """Run `command` on `wanted` locked GPUs (CUDA_VISIBLE_DEVICES set); its exit status."""
    with granted(wanted) as grant:
        log.info("GPUs for this job: %s (%s)", grant.devices or "none, CPU", grant.source)
        env = {**os.environ, **grant.environment()}
        return subprocess.run(command, env=env, pass_fds=grant.lock_fds(), check=False).returncode
