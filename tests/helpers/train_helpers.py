"""Tiny normalized shards, training slices and jobs for the training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medlatent import config as mlconfig
from medlatent.io.h5 import ShardWriter
from medlatent.train import ddp
from medlatent.train.loop import Job

REPO = Path(__file__).resolve().parents[2]
FULL_CONFIG = REPO / "config.yaml"
DEMO_CONFIG = REPO / "workflow" / "demo" / "config.yaml"

#: Smallest models the schema allows (f=16 in 2D, /4 per axis; f=64 in 3D), 8 channels wide.
TINY_2D = {
    "id": "tiny2d",
    "dims": 2,
    "f": 16,
    "latent_channels": 1,
    "ch": 8,
    "ch_mult": [1, 1, 1],
    "num_res_blocks": 1,
    "norm_groups": 4,
    "init": "scratch",
}
TINY_3D = {**TINY_2D, "id": "tiny3d", "dims": 3, "f": 64, "inflate_from": "tiny2d"}
CPU = ddp.Context(0, 1, torch.device("cpu"))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread (and do not stall when the cores are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def phantom(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A smooth random 'anatomy' on a -1 background, values in [-1, 1]."""
    axes = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = sum((a - rng.uniform(-0.2, 0.2)) ** 2 for a in axes) ** 0.5
    body = radius < rng.uniform(0.6, 0.9)
    texture = np.sin(sum(a * rng.uniform(2, 5) for a in axes) + rng.uniform(0, 6))
    return np.where(body, 0.6 * texture, -1.0).astype(np.float32)


def write_shard(path: Path, count: int, shape: tuple[int, ...], seed: int) -> str:
    rng = np.random.default_rng(seed)
    with ShardWriter(path, {"shard": path.stem, "demo": True}) as writer:
        for i in range(count):
            writer.add(f"{path.parent.name}_{seed:02d}{i:04d}", phantom(shape, rng), {"split": path.stem[:-4]})
    return str(path)


def make_data(root: Path, shape: tuple[int, ...], n_train: int = 12, n_val: int = 4) -> tuple[list[str], list[str]]:
    """Two train shards and one val shard of one synthetic source under root/data/normalized."""
    folder = root / "data" / "normalized" / f"src{len(shape)}d"
    train = [write_shard(folder / f"train-{k:03d}.h5", n_train // 2, shape, seed=k) for k in range(2)]
    val = [write_shard(folder / "val-000.h5", n_val, shape, seed=9)] if n_val else []
    return train, val


def make_config(tmp: Path, models: list[dict]) -> dict:
    """The demo configuration with `models` replaced, loaded and validated like the workflow does."""
    override = tmp / "models-override.yaml"
    # the demo's evaluation.cad.models names demo models: compare whichever models are given
    override.write_text(yaml.safe_dump({"models": models, "evaluation": {"cad": {"models": None}}}))
    return mlconfig.load(FULL_CONFIG, DEMO_CONFIG, override)


def train_spec(config: dict, model_id: str, stage: str, **train: object) -> dict:
    spec = mlconfig.train_slice(config, model_id, stage)
    spec["train"].update(train)
    return spec


def make_job(
    root: Path,
    spec: dict,
    shards: tuple[list[str], list[str]],
    parent: Path | None = None,
    hooks=(),
    context: ddp.Context = CPU,
    manifests=(),
) -> Job:
    stage = spec["stage"]
    out = root / "results" / "models" / spec["model"]["id"]
    return Job(
        spec=spec,
        train_shards=shards[0],
        val_shards=shards[1],
        manifests=list(manifests),
        checkpoints=root / "results" / "checkpoints" / spec["model"]["id"] / stage,
        weights=out / f"{stage}.pt",
        losses=out / f"{stage}_losses.csv",
        curve=out / f"{stage}_losses.png",
        card=out / "card.json" if stage == "stage2" else None,
        parent=parent,
        context=context,
        hooks=hooks,
    )
