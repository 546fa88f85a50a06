"""Efficiency of the CAD classifiers on full-size images vs latents (Figure 2).

For every configured f: the classifier of the task dims (2D HRNet, 3D SEResNet) on an image of
`image_size` and on the one-channel latent the classifier sees (size / sqrt(f) per side in 2D,
/ cbrt(f) per axis in 3D, the MedVAE models' f). Every family model adds a row named after it, at
the geometry its weights give (`medlatent.models.families.weights_geometry`: factors per axis,
anisotropic for video VAEs and 2D models slice-wise on volumes): the latent grid of the image,
averaged over its channels to one, as CAD feeds it (`medlatent.cad.data.classifier_latent`).
Latency is the wall time of one forward pass of a batch (eval mode, no gradients; CUDA
synchronised), throughput is samples per second at that batch, max batch is the largest power
of two for which a training step (forward + backward) fits in memory.
On a CPU there is no out-of-memory signal before the machine swaps, so the search stops at
`max_batch_cap_cpu` and the table says the value is a lower bound. Timings are of the device
the job ran on, and every row names it.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from medlatent.cad.classifiers import CAD_IN_CHANNELS, build_classifier
from medlatent.cad.data import grid_shape, method_shape
from medlatent.core.atomic import write_text

if TYPE_CHECKING:
    from medlatent.models.families import Geometry

log = logging.getLogger(__name__)

#: Bytes per value of the classifier input (float32 for images and latents alike: ratios are then f).
INPUT_BYTES = 4


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that wall time covers it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def latency_ms(
    model: torch.nn.Module, shape: list[int], batch_size: int, warmup: int, iterations: int, device: torch.device
) -> float:
    """Median wall time (ms) of one forward pass of a (batch, 1, *shape) batch."""
    x = torch.randn(batch_size, CAD_IN_CHANNELS, *shape, device=device)
    model.eval()
    times = []
    with torch.inference_mode():
        for step in range(warmup + iterations):
            synchronize(device)
            started = time.perf_counter()
            model(x)
            synchronize(device)
            if step >= warmup:
                times.append(time.perf_counter() - started)
    times.sort()
    return 1000 * times[len(times) // 2]


def _is_oom(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or an allocator failure (CPU: "DefaultCPUAllocator: can't allocate memory")."""
    message = str(error).lower()
    return (
        isinstance(error, torch.cuda.OutOfMemoryError)
        or "out of memory" in message
        or "can't allocate memory" in message
    )


def max_batch_size(model: torch.nn.Module, shape: list[int], cap: int, device: torch.device) -> int:
    """Largest power of two <= cap for which one training step fits; 0 if not even one sample does."""
    model.train()
    best, batch = 0, 1
    while batch <= cap:
        try:
            model.zero_grad(set_to_none=True)
            x = torch.randn(batch, CAD_IN_CHANNELS, *shape, device=device)
            if batch == 1:  # BatchNorm refuses one value per channel in training mode
                model.eval()
            model(x).float().sum().backward()
            model.train()
            synchronize(device)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as error:
            if not _is_oom(error):
                raise
            break
        finally:
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        best, batch = batch, batch * 2
    return best


def latent_inputs(spec: dict, dims: int, size: list[int], geometries: dict[str, Geometry]) -> list[dict]:
    """Every latent timed on `dims` inputs of `size`: its label, f and classifier input shape; a family
    model's also its id and latent shape (channels first, before the channel mean)."""
    inputs = [{"input": f"latent f={f}", "f": f, "shape": method_shape(size, f, dims)} for f in spec[f"f_{dims}d"]]
    for model_id in spec["families"]:
        geometry = geometries[model_id]
        if len(geometry.factors) == dims:
            f, grid = math.prod(geometry.factors), grid_shape(size, list(geometry.factors))
            inputs.append(
                {
                    "input": f"latent {model_id} (f={f})",
                    "f": f,
                    "shape": grid,
                    "model": model_id,
                    "latent_shape": "x".join(map(str, [geometry.latent_channels, *grid])),
                    "demo_weights": geometry.demo_weights,
                }
            )
    return inputs


def efficiency_rows(spec: dict, device: torch.device, geometries: dict[str, Geometry] | None = None) -> list[dict]:
    """One row per (dims, input): the full-size image (f=1), the latent at every configured f and the
    latent of every family model (`geometries`: its factors per axis and latent channels by id)."""
    geometries = geometries or {}
    missing = sorted(set(spec["families"]) - set(geometries))
    if missing:
        raise ValueError(f"no weights geometry for family model(s) {missing}: pass their final weights files")
    cap = spec["max_batch_cap_gpu"] if device.type == "cuda" else spec["max_batch_cap_cpu"]
    name = device_name(device)
    rows = []
    for dims in (2, 3):
        size = spec["image_size_2d"] if dims == 2 else spec["image_size_3d"]
        latents = latent_inputs(spec, dims, size, geometries)
        if not latents:
            continue
        classifier = spec["classifier_2d"] if dims == 2 else spec["classifier_3d"]
        torch.manual_seed(0)
        model = build_classifier(dims, 2, classifier).to(device)
        for entry in [{"input": "image", "f": 1, "shape": list(size)}, *latents]:
            shape = entry["shape"]
            latency = latency_ms(model, shape, spec["batch_size"], spec["warmup"], spec["iterations"], device)
            largest = max_batch_size(model, shape, cap, device)
            rows.append(
                {
                    "dims": dims,
                    "input": entry["input"],
                    "model": entry.get("model"),
                    "latent_shape": entry.get("latent_shape"),
                    "demo_weights": entry.get("demo_weights", False),
                    "f": entry["f"],
                    "input_shape": "x".join(map(str, [CAD_IN_CHANNELS, *shape])),
                    "classifier": classifier["name"],
                    "batch_size": spec["batch_size"],
                    "latency_ms": round(latency, 3),
                    "throughput_per_s": round(spec["batch_size"] / (latency / 1000), 2),
                    "max_batch": largest,
                    "max_batch_capped": device.type != "cuda" and largest >= cap,
                    "input_bytes_float32": math.prod(shape) * CAD_IN_CHANNELS * INPUT_BYTES,
                    "device": name,
                }
            )
            log.info("%dD %s: %.1f ms, max batch %d", dims, entry["input"], latency, largest)
        del model
    return _with_ratios(rows)


def _with_ratios(rows: list[dict]) -> list[dict]:
    """Latency fall, throughput gain and max-batch gain of every row against its dims' image row."""
    images = {row["dims"]: row for row in rows if row["input"] == "image"}
    for row in rows:
        image = images[row["dims"]]
        row["latency_reduction"] = round(image["latency_ms"] / row["latency_ms"], 2)
        row["throughput_gain"] = round(row["throughput_per_s"] / image["throughput_per_s"], 2)
        row["max_batch_gain"] = round(row["max_batch"] / image["max_batch"], 2) if image["max_batch"] else None
        row["input_bytes_reduction"] = round(image["input_bytes_float32"] / row["input_bytes_float32"], 2)
    return rows


def write_timing(path: str | Path, spec: dict, rows: list[dict]) -> None:
    """The timing rows with the slice that made them (JSON), the input of the efficiency table."""
    write_text(path, json.dumps({"rows": rows, "spec": spec}, indent=1, sort_keys=True) + "\n")
