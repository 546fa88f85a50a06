"""Data-parallel training over the GPUs a job was granted (torch DDP, torchrun).

One process per granted GPU: a job granted more than one re-runs its own command under
`torchrun --standalone`; the children find RANK / WORLD_SIZE / LOCAL_RANK in their
environment and join a process group (NCCL on GPUs, gloo on the CPU, which the tests use).
The trainable model is wrapped in `DistributedDataParallel`. The discriminator is not: it
runs twice per step (real, fake) and inside the generator's loss, which DDP's one forward /
one backward contract does not allow, so its gradients are averaged with `average_gradients`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """This process's place in the job: rank, world size and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def setup() -> Context:
    """Join the process group when started by torchrun; else a single process on cuda:0 or the CPU."""
    cuda = torch.cuda.is_available()
    if launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1:
        local_rank = int(os.environ["LOCAL_RANK"])
        device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo")
        return Context(dist.get_rank(), dist.get_world_size(), device)
    return Context(0, 1, torch.device("cuda", 0) if cuda else torch.device("cpu"))


def teardown(context: Context) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: nn.Module, context: Context) -> nn.Module:
    """DDP around `module` when distributed (parameters broadcast from rank 0); else `module`."""
    if not context.distributed:
        return module
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def sync_context(module: nn.Module, synchronize: bool):
    """`no_sync()` on DDP modules for accumulation steps that must not all-reduce yet."""
    if isinstance(module, DistributedDataParallel) and not synchronize:
        return module.no_sync()
    return nullcontext()


def average_gradients(parameters: Iterable[nn.Parameter], context: Context) -> None:
    """All-reduce and average the gradients of `parameters` over ranks (what DDP does)."""
    if not context.distributed:
        return
    for parameter in parameters:
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
            parameter.grad /= context.world


def broadcast_parameters(module: nn.Module, context: Context) -> None:
    """Rank 0's parameters and buffers on every rank (for modules DDP does not wrap)."""
    if context.distributed:
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def barrier(context: Context) -> None:
    if context.distributed:
        dist.barrier()


def launch(processes: int, env: dict[str, str], pass_fds: Iterable[int] = ()) -> int:
    """Re-run this command under torchrun on `processes` local processes; their exit status."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "medlatent.cli",
        *sys.argv[1:],
    ]
    log.info("launching %d processes: %s", processes, " ".join(command))
    return subprocess.run(command, env=env, pass_fds=tuple(pass_fds), check=False).returncode
