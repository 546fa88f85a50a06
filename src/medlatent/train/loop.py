"""The one loop that runs every training stage, with its checkpoints and validation.

Gradient accumulation is applied for real: `batch_size` is the global batch, cut into
world x accumulation micro-batches (`data.MicroBatches`), each loss weighted by its share so
the summed gradient is the gradient of the global batch mean.

Determinism: all randomness of a micro-batch (posterior sample, LoRA dropout) comes from the
torch generator reseeded from (seed, step, micro-batch number), and the data stream is a
function of the sample number, so a resumed run repeats an uninterrupted one exactly on the
CPU, and N processes compute what one process accumulating N micro-batches does.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from medlatent.config import canonical_json
from medlatent.core.errors import ConfigError
from medlatent.train import checkpoint, curves, ddp
from medlatent.train.data import (
    CropDataset,
    MicroBatches,
    crop_size,
    index_shards,
    micro_batch,
    train_loader,
    validation_loader,
)
from medlatent.train.stages import Stage

log = logging.getLogger(__name__)

#: Keys that change how often state is saved, not what is computed: not in the fingerprint.
BOOKKEEPING_KEYS = ("checkpoint_every",)

StepHook = Callable[[int, dict], None]


@dataclass
class Job:
    """One training job: its config slice, inputs, outputs and place in the process group."""

    spec: dict[str, Any]
    train_shards: Sequence[str]
    val_shards: Sequence[str]
    manifests: Sequence[str]
    checkpoints: Path
    weights: Path
    losses: Path
    curve: Path
    card: Path | None = None
    parent: Path | None = None
    context: ddp.Context = field(default_factory=ddp.setup)
    workers: int = 0
    #: Called after every optimisation step with (steps done, mean train losses).
    hooks: Sequence[StepHook] = ()

    @property
    def settings(self) -> dict[str, Any]:
        return self.spec["train"]


def seed_micro_batch(seed: int, step: int, number: int) -> None:
    """Reseed torch (CPU and CUDA) for micro-batch `number` of `step`."""
    torch.manual_seed(int(np.random.SeedSequence([seed, step, number]).generate_state(1)[0]))


def fingerprint(job: Job) -> str:
    """Identity of a job for resuming: its slice without bookkeeping keys, and its input files."""
    spec = {**job.spec, "train": {k: v for k, v in job.settings.items() if k not in BOOKKEEPING_KEYS}}
    inputs = [
        (f"{Path(p).parent.name}/{Path(p).name}", os.stat(p).st_size, os.stat(p).st_mtime_ns)
        for p in sorted(map(str, [*job.train_shards, *job.val_shards, *([job.parent] if job.parent else [])]))
    ]
    return hashlib.sha256(canonical_json({"spec": spec, "inputs": inputs}).encode()).hexdigest()


@dataclass
class Outcome:
    """What a finished stage reports: steps, last losses, and where it ran."""

    steps: int
    final_losses: dict[str, dict[str, float]]
    device: dict[str, Any]
    history: list[dict] = field(repr=False, default_factory=list)


def _global_means(sums: dict[str, float], total: int, context: ddp.Context) -> dict[str, float]:
    """Sample-weighted means over the whole global batch (summed over ranks)."""
    keys = sorted(sums)
    values = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
    if context.distributed:
        values = values.to(context.device)
        torch.distributed.all_reduce(values)
    return {key: float(value) / total for key, value in zip(keys, values.cpu())}


def _validate(stage: Stage, loader, step: int, device: torch.device) -> dict[str, float] | None:
    if loader is None:
        return None
    sums: dict[str, float] = defaultdict(float)
    count = 0
    for x in loader:
        for key, value in stage.validate(x.to(device), step).items():
            sums[key] += value * len(x)
        count += len(x)
    return {key: value / count for key, value in sums.items()}


def device_record(context: ddp.Context, plan: MicroBatches) -> dict[str, Any]:
    device = context.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "type": device.type,
        "name": name,
        "processes": context.world,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "global_batch": plan.global_batch,
        "micro_batch": plan.micro_batch,
        "accumulation": plan.accumulation,
        "torch_threads": torch.get_num_threads(),
    }


def run(job: Job, stage: Stage, dims: int, downsample: int) -> Outcome:
    """Train `stage` for the configured steps, resuming from the latest checkpoint of this job."""
    settings, context, seed = job.settings, job.context, job.spec["seed"]
    steps, every = settings["steps"], settings["checkpoint_every"]
    plan = MicroBatches(settings["batch_size"], micro_batch(settings), context.world)
    items = index_shards(job.train_shards, dims)
    if not items:
        raise ConfigError(f"no training images in {list(job.train_shards)} (sources {job.spec['sources']})")
    size = crop_size(items, settings["crop" if dims == 2 else "patch"], downsample, dims)
    val_items = index_shards(job.val_shards, dims) if context.is_main else []
    validation = validation_loader(val_items, size, plan.micro_batch, settings["val_batches"])
    identity = fingerprint(job)

    start, history = 0, []
    state = checkpoint.load_latest(job.checkpoints, identity)
    if state is not None:
        stage.load_state_dict(state["state"])
        start, history = state["step"], list(state["history"])
        checkpoint.set_rng_state(state["rng"])
    log.info(
        "%s %s: %d steps from step %d, %d training items, input %s, %s",
        job.spec["model"]["id"],
        job.spec["stage"],
        steps,
        start,
        len(items),
        size,
        plan,
    )

    loader = train_loader(
        CropDataset(items, size, seed, shuffle=True),
        plan,
        context.rank,
        start,
        steps,
        job.workers,
        pin_memory=context.device.type == "cuda",
    )
    batches = iter(loader)
    progress = tqdm(
        total=steps,
        initial=start,
        desc=f"{job.spec['model']['id']} {job.spec['stage']}",
        file=sys.stderr,
        mininterval=2.0,
        disable=not context.is_main,
        ascii=True,
    )
    for step in range(start, steps):
        sums: dict[str, float] = defaultdict(float)
        for a in range(plan.accumulation):
            x = next(batches).to(context.device, non_blocking=True)
            seed_micro_batch(seed, step, a * context.world + context.rank)
            logs = stage.micro_step(x, step, plan.loss_scale(len(x)), synchronize=a == plan.accumulation - 1)
            for key, value in logs.items():
                sums[key] += value * len(x)
        stage.optimizer_step(step)
        row = _global_means(sums, plan.global_batch, context)
        history.append({"step": step + 1, "split": "train", **row})
        done = step + 1
        if every and done % every == 0 and done < steps:
            if context.is_main:
                val = _validate(stage, validation, step, context.device)
                if val is not None:
                    history.append({"step": done, "split": "val", **val})
                checkpoint.save(
                    job.checkpoints,
                    done,
                    identity,
                    {
                        "state": stage.state_dict(),
                        "history": history,
                        "sampler": {"seed": seed, "next_sample": done * plan.global_batch},
                    },
                )
            ddp.barrier(context)
        for hook in job.hooks:
            hook(done, row)
        progress.update(1)
        progress.set_postfix(
            {k: f"{row[k]:.3g}" for k in ("total", "rec_l1", "embed", "d_loss") if k in row}, refresh=False
        )
    progress.close()
    if context.is_main:
        val = _validate(stage, validation, steps, context.device)
        if val is not None:
            history.append({"step": steps, "split": "val", **val})
    train_rows = [r for r in history if r["split"] == "train"]
    val_rows = [r for r in history if r["split"] == "val"]
    # the last value of every term: an adversarial stage logs the autoencoder's and the
    # discriminator's terms on alternate steps
    final = {
        split: {k: v for row in rows for k, v in row.items() if k not in ("step", "split")}
        for split, rows in (("train", train_rows), ("val", val_rows))
        if rows
    }
    return Outcome(steps, final, device_record(context, plan), history)


def finish(job: Job, outcome: Outcome, title: str) -> None:
    """Loss curves and checkpoint cleanup once the weights are written (rank 0)."""
    curves.write_csv(job.losses, outcome.history)
    curves.plot(job.curve, outcome.history, title)
    checkpoint.clear(job.checkpoints)
