"""Resumable training: atomic checkpoints every N steps, resume from the latest.

A checkpoint holds everything the next step depends on: the step, the trainable modules,
the optimisers, the discriminator, the GradScalers, the loss history, the random number
generators (Python, NumPy, torch CPU and CUDA) and the data sampler's position. It carries a
fingerprint of the job (config slice and inputs): a checkpoint written under another
configuration is never resumed from. Files: `<dir>/step-00000120.pt`, written under a
temporary name and renamed, older ones removed after the new one is in place; the folder is
removed once the job's outputs are written.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medlatent.core.atomic import save_torch

log = logging.getLogger(__name__)

FORMAT = "medlatent-checkpoint/1"
_NAME = re.compile(r"^step-(\d{8})\.pt$")


def rng_state() -> dict[str, Any]:
    """Every global random generator's state, in types `torch.load(weights_only=True)` reads."""
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            **numpy_state,
            "state": {"key": numpy_state["state"]["key"].tolist(), "pos": numpy_state["state"]["pos"]},
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state(
        {
            **numpy_state,
            "state": {
                "key": np.array(numpy_state["state"]["key"], dtype=np.uint32),
                "pos": numpy_state["state"]["pos"],
            },
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_files(directory: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints in `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save(directory: str | Path, step: int, fingerprint: str, state: dict[str, Any]) -> Path:
    """Write the checkpoint of `step` atomically, then drop the older ones."""
    target = Path(directory) / f"step-{step:08d}.pt"
    payload = {"format": FORMAT, "fingerprint": fingerprint, "step": step, "rng": rng_state(), **state}
    save_torch(target, payload)
    for older_step, path in checkpoint_files(directory):
        if older_step < step:
            path.unlink(missing_ok=True)
    log.info("checkpoint: step %d -> %s", step, target)
    return target


def load_latest(directory: str | Path, fingerprint: str) -> dict[str, Any] | None:
    """The newest checkpoint of this job (same fingerprint), or None to start afresh.

    The caller restores the modules from it and then calls `set_rng_state(ckpt["rng"])`.
    """
    files = checkpoint_files(directory)
    if not files:
        return None
    step, path = files[-1]
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != FORMAT or payload.get("fingerprint") != fingerprint:
        log.warning("discarding checkpoints in %s: written for another configuration or other inputs", directory)
        clear(directory)
        return None
    log.info("resuming from %s (step %d)", path, step)
    return payload


def clear(directory: str | Path) -> None:
    """Remove the checkpoints once the job's final outputs exist."""
    shutil.rmtree(directory, ignore_errors=True)
