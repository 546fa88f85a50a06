"""`make bench`, training: optimisation steps per second and peak memory of every demo model.

Each model's training stages run through the real stage objects of `train.stages` (the demo
LPIPS / embedder stand-ins, discriminator on) on random inputs of the demo sizes; the
encoder's forward pass is timed alone too, since that is what latent extraction pays.
After `disc_start` a step updates one network (even steps the autoencoder, odd steps the
discriminator), so the adversarial stages are timed over such a pair of steps.
Peak memory: the process's resident high-water mark during the steps (reset per model
through /proc/self/clear_refs on Linux) on the CPU, `torch.cuda.max_memory_allocated` on a GPU.

`discriminator_3d`: one discriminator update on 3D patches (hinge on real and fake volumes,
forward and backward, train mode) with the per-slice BatchNorm of `Discriminator.logits`
against calling the network one slice at a time as the public MedVAE code does (same results).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from medlatent import config as mlconfig
from medlatent.models.embedder import load_embedder
from medlatent.models.inflate import inflate_model
from medlatent.models.projection import ProjectionHead
from medlatent.models.registry import create_autoencoder
from medlatent.train import ddp, recipes, stages
from medlatent.train.data import micro_batch
from medlatent.train.discriminator import Discriminator
from medlatent.train.losses import hinge_d_loss

REPO = Path(__file__).resolve().parents[1]
DEMO = (REPO / "config.yaml", REPO / "workflow" / "demo" / "config.yaml")
#: Input size of the 2D demo models (the demo's normalize size).
SIZE_2D = (64, 64)


def reset_peak(device: torch.device) -> None:
    """Start a new peak-memory measurement: GPU allocator stats, or the process's resident high-water mark."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass  # then the peak is the process's lifetime maximum (ru_maxrss)


def peak_mb(device: torch.device) -> float:
    """Peak memory since reset_peak: max allocated on a GPU, resident high-water mark (VmHWM) on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn: Callable[[], None], steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call after `warmup` calls."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) / steps


def _stage_figures(
    stage: stages.Stage, x: torch.Tensor, cycle: Sequence[int], steps: int, warmup: int, device: torch.device
) -> dict[str, float]:
    """Figures of `stage` running the training steps numbered `cycle` over and over."""

    def one_cycle() -> None:
        for step in cycle:
            stage.micro_step(x, step, 1.0, synchronize=True)
            stage.optimizer_step(step)

    reset_peak(device)
    seconds = _timed(one_cycle, steps, warmup, device) / len(cycle)
    return {
        "steps_per_s": round(1 / seconds, 3),
        "samples_per_s": round(len(x) / seconds, 2),
        "micro_batch": len(x),
        "peak_memory_mb": round(peak_mb(device), 1),
    }


def slice_by_slice_logits(discriminator: Discriminator, volume: torch.Tensor) -> torch.Tensor:
    """The public code's 3D scoring: the 2D network on one slice at a time along each axis, maps averaged."""
    maps = [discriminator(volume.select(axis, j))[-1] for axis in (2, 3, 4) for j in range(volume.shape[axis])]
    return torch.stack(maps).mean(dim=0)


def bench_3d_discriminator(
    shapes: Sequence[tuple[int, int]], steps: int, warmup: int, device: torch.device
) -> dict[str, Any]:
    """Seconds of one discriminator update on (batch, side^3) patches: per-slice BatchNorm vs one call per slice."""
    figures = {}
    for batch, side in shapes:
        torch.manual_seed(0)
        discriminator = Discriminator().to(device)
        real, fake = (torch.rand(batch, 1, side, side, side, device=device) * 2 - 1 for _ in range(2))
        scorers = {"vectorised": discriminator.logits, "per_slice_calls": partial(slice_by_slice_logits, discriminator)}
        timings = {
            name: _timed(lambda score=score: hinge_d_loss(score(real), score(fake)).backward(), steps, warmup, device)
            for name, score in scorers.items()
        }
        figures[f"batch{batch}_patch{side}"] = {
            "vectorised_s": round(timings["vectorised"], 3),
            "per_slice_calls_s": round(timings["per_slice_calls"], 3),
            "speedup": round(timings["per_slice_calls"] / timings["vectorised"], 2),
        }
    return figures


def _encoder_ms(autoencoder: torch.nn.Module, x: torch.Tensor, steps: int, device: torch.device) -> float:
    autoencoder.eval()
    with torch.no_grad():
        seconds = _timed(lambda: autoencoder.encode(x), steps, 1, device)
    autoencoder.train()
    return round(seconds * 1000, 2)


def bench_model(config: dict, model: dict, steps: int, warmup: int, context: ddp.Context) -> dict[str, Any]:
    """Figures of one demo model: each training stage and the encoder forward."""
    device, dims = context.device, model["dims"]
    stage_name = "stage1" if dims == 2 else "stage2"
    spec = mlconfig.train_slice(config, model["id"], stage_name)
    settings = spec["train"]
    size = SIZE_2D if dims == 2 else tuple(settings["patch"])
    x = (torch.rand(micro_batch(settings), 1, *size, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)
    torch.manual_seed(0)
    if dims == 2:
        autoencoder = recipes.build_stage1_autoencoder(model, demo=True)
        loss = recipes.adversarial_loss(settings, 2, recipes.perceptual_network(spec), load_embedder(spec["embedder"]))
    else:
        parent = next(m for m in config["models"] if m["id"] == model["inflate_from"])
        autoencoder = inflate_model(create_autoencoder(parent))
        loss = recipes.adversarial_loss(settings, 3, recipes.perceptual_network(spec), None)
    adversarial = stages.AdversarialStage(
        autoencoder, loss, recipes.effective_lr(settings), settings["precision"], context
    )
    # steady state: an autoencoder step (even) and a discriminator step (odd) after disc_start
    first = settings["disc_start"] + settings["disc_start"] % 2
    figures = {
        stage_name: _stage_figures(adversarial, x, (first, first + 1), steps, warmup, device),
        "encoder_forward_ms": _encoder_ms(autoencoder, x, steps, device),
        "input": list(x.shape),
    }
    if dims == 2:
        spec2 = mlconfig.train_slice(config, model["id"], "stage2")
        x2 = x[: micro_batch(spec2["train"])]
        projection = stages.ProjectionStage(
            autoencoder,
            ProjectionHead(2, autoencoder.latent_channels),
            load_embedder(spec2["embedder"]),
            recipes.effective_lr(spec2["train"]),
            spec2["train"]["precision"],
            context,
        )
        figures["stage2"] = _stage_figures(projection, x2, (0,), steps, warmup, device)
    return figures


def run(steps: int = 2, warmup: int = 1) -> dict[str, Any]:
    """Training throughput and memory of the six demo models (`make bench`)."""
    config = mlconfig.load(*DEMO)
    context = ddp.Context(0, 1, torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))
    models = {model["id"]: bench_model(config, model, steps, warmup, context) for model in config["models"]}
    patch = next(m["stage2"]["patch"][0] for m in config["models"] if m["dims"] == 3)
    return {
        "device": str(context.device),
        "torch_threads": torch.get_num_threads(),
        "timed_steps": steps,
        "models": models,
        # the demo's patches, and one of the recipe's 64^3 (more are slow on a CPU one slice at a time)
        "discriminator_3d": bench_3d_discriminator(((2, patch), (1, 64)), steps, warmup, context.device),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2, sort_keys=True))
