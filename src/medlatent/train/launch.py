"""Where a training job runs: its GPUs, and one process per GPU under torchrun.

A training command first takes its GPUs (`medlatent.core.gpus`: disjoint devices for concurrent
local jobs, SLURM's own devices inside a SLURM job, the CPU when there are none); on more
than one it re-runs itself under torchrun, one process per GPU, and the children (which
find RANK in their environment) train.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from medlatent.core import gpus
from medlatent.core.errors import MedLatentError
from medlatent.train import ddp, recipes
from medlatent.train.data import processes_for
from medlatent.train.loop import Job

log = logging.getLogger(__name__)


def _train_here(recipe: str, fields: dict[str, Any], threads: int, context: ddp.Context) -> None:
    torch.set_num_threads(max(1, threads // context.world))
    # the CPU computes; on GPUs spare threads feed it data
    workers = max(0, threads // context.world - 1) if context.device.type == "cuda" else 0
    job = Job(**fields, context=context, workers=workers)
    try:
        getattr(recipes, recipe)(job)
    finally:
        ddp.teardown(context)


def train_on_granted_devices(command: str, recipe: str, fields: dict[str, Any], threads: int) -> None:
    """Run one training job on the GPUs it is granted (several: one torchrun process each), else the CPU.

    Args:
        command: the CLI command, for messages.
        recipe: the function of `medlatent.train.recipes` that trains the stage.
        fields: the `Job` fields other than `context` and `workers` (its slice, inputs and outputs).
        threads: CPU threads of the job (Snakemake {threads}), shared by its processes.
    """
    if ddp.launched_by_torchrun():  # a child of the launch below: its devices are already set
        _train_here(recipe, fields, threads, ddp.setup())
        return
    spec = fields["spec"]
    with gpus.granted(spec["train"]["gpus"]) as grant:
        processes = processes_for(spec["train"], grant.count)
        os.environ[gpus.VISIBLE] = ",".join(grant.devices[:processes])
        log.info(
            "%s %s: GPUs %s (%s), %d process(es)",
            spec["model"]["id"],
            command,
            grant.devices or "none, CPU",
            grant.source,
            processes,
        )
        if processes > 1:
            status = ddp.launch(processes, dict(os.environ), grant.lock_fds())
            if status:
                raise MedLatentError(f"{command}: a training process exited with status {status} (see above)")
            return
        _train_here(recipe, fields, threads, ddp.setup())
