"""`make bench-gpu`: the paper-scale figures, on one GPU (or on CPU with `--device cpu --quick`).

- Extraction per released architecture (`medlatent.models.registry.RELEASED`, random weights at
  the published width): `extract_shards` on a generated HDF5 shard (reads, batching, encoder,
  float16, tar writing) vs the bare `encode_latent_padded` forward on the same tensors, both at
  the batch size `latents.max_memory_gb` gives (`budget_batch_size`). 2D at 1024x1024, 3D at
  160^3 (one window per volume), with `latents.workers` reader processes and at `latents.precision`
  (`--workers`, `--precision`; the bare encoder runs under the same autocast). Peak memory per
  architecture: `torch.cuda.max_memory_allocated` on a GPU, the process's resident high-water mark
  on the CPU (reader workers not included); below fp32, the error against fp32 that the part
  record holds (first batch).
- HRNet-w64 on 1024^2 images vs f=64 latents, and SEResNet-152 on 160^3 volumes vs f=512
  latents (random weights): latency at batch 1, throughput at a larger batch, max training
  batch, through `medlatent.evaluate.efficiency`; paper: x70, /69, x32 (2D) and x55 (3D).

`--quick` shrinks images, volumes, widths and iterations so that it runs in a few minutes on
2 CPU cores; its figures are not the paper's conditions and the output says so.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench import machine
from bench_latents import WORKERS, _write_inputs
from bench_train import peak_mb, reset_peak

from medlatent.cad.classifiers import build_classifier
from medlatent.cad.data import method_shape
from medlatent.core.atomic import write_text
from medlatent.evaluate.efficiency import device_name, latency_ms, max_batch_size, synchronize
from medlatent.io.h5 import ShardReader
from medlatent.latents.extract import extract_shards
from medlatent.latents.memory import budget_batch_size
from medlatent.latents.precision import AUTOCAST, autocast
from medlatent.models.registry import RELEASED, load_model, published_spec

#: Full-size conditions (the recipe's X-ray size, the released 3D window) and their quick shrink.
FULL = {"image": 1024, "volume": 160, "ch": 128, "items_2d": 16, "items_3d": 2, "batch": 32, "iterations": 5}
QUICK = {"image": 128, "volume": 64, "ch": 32, "items_2d": 4, "items_3d": 1, "batch": 2, "iterations": 1}
#: Schema defaults of latents.batch_size (2D cap) and latents.sw_batch_size (3D windows cap).
BATCH_CAP = {2: 16, 3: 1}
#: Caps of the max-batch search: a CPU gives no out-of-memory signal before it swaps (a lower bound there).
MAX_BATCH_CAP = {"cuda": 1024, "cpu": 2}
CLASSIFIERS = {
    2: ({"name": "hrnet_w64", "pretrained_path": None}, 64, {"throughput": 70, "latency": 69, "max_batch": 32}),
    3: ({"name": "seresnet152"}, 512, {"throughput": 55}),
}
GOAL_PIPELINE = ">= 0.95"


def _spec(name: str, ch: int) -> dict:
    # GroupNorm needs norm_groups to divide every level's width; 32 does at ch >= 32
    return {**published_spec(name), "ch": ch, "norm_groups": min(32, ch)}


def _bare_seconds(autoencoder: torch.nn.Module, shard: Path, batch: int, device: torch.device, precision: str) -> float:
    with ShardReader(shard) as reader:
        images = torch.from_numpy(np.stack([array for _, array, _ in reader]))[:, None].to(device)
    with torch.inference_mode(), autocast(precision, device):
        autoencoder.encode_padded(images[:batch])  # warm-up: kernels, allocator
        synchronize(device)
        started = time.perf_counter()
        for start in range(0, len(images), batch):
            autoencoder.encode_padded(images[start : start + batch])
        synchronize(device)
    return time.perf_counter() - started


def extraction(
    name: str, sizes: dict, device: torch.device, max_memory_gb: float, workers: int = WORKERS, precision: str = "fp32"
) -> dict:
    """Pipeline vs bare encoder items/s for one released architecture at the budget's batch size."""
    spec = _spec(name, sizes["ch"])
    dims = spec["dims"]
    shape = (sizes["image"],) * 2 if dims == 2 else (sizes["volume"],) * 3
    count = sizes["items_2d"] if dims == 2 else sizes["items_3d"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shard, manifest, weights = _write_inputs(folder, spec, shape, count)
        autoencoder = load_model(weights).autoencoder.to(device).eval()
        batch = budget_batch_size(autoencoder, shape, max_memory_gb, BATCH_CAP[dims], "latents.max_memory_gb")
        extract = {
            "model": spec["id"],
            "source": "bench",
            "modality": "ct" if dims == 3 else "xray",
            "dims": dims,
            "batch_size": BATCH_CAP[2],
            "max_memory_gb": max_memory_gb,
            "precision": precision,
            "store": ["mean"] if dims == 2 else [],
            **(
                {"window": list(shape), "overlap": 0.25, "blend": "gaussian", "sw_batch_size": BATCH_CAP[3]}
                if dims == 3
                else {}
            ),
        }
        bare = _bare_seconds(autoencoder, shard, batch, device, precision)
        reset_peak(device)
        started = time.perf_counter()
        [part] = extract_shards(
            extract, [shard], manifest, weights, folder / "ds", folder / "part.json", str(device), workers
        )
        synchronize(device)
        end_to_end = time.perf_counter() - started
    ratio = bare / end_to_end
    return {
        "model": name,
        "ch": spec["ch"],
        "input_shape": list(shape),
        "latent_shape": part["latent_shapes"][0],
        "items": count,
        "batch_size": batch,
        "extract_items_per_s": round(count / end_to_end, 3),
        "bare_encoder_items_per_s": round(count / bare, 3),
        "pipeline_vs_bare": round(ratio, 3),
        "goal_pipeline_vs_bare": GOAL_PIPELINE,
        "workers": workers,
        "precision": precision,
        "precision_error": part["precision_error"],
        f"peak_{'gpu' if device.type == 'cuda' else 'rss'}_gb": round(peak_mb(device) / 2**10, 2),
    }


def classifier(dims: int, sizes: dict, device: torch.device) -> dict:
    """Image vs latent: latency (batch 1), throughput (larger batch), max training batch; beside the paper."""
    spec, f, paper = CLASSIFIERS[dims]
    image = [sizes["image"]] * 2 if dims == 2 else [sizes["volume"]] * 3
    latent = method_shape(image, f, dims)
    torch.manual_seed(0)
    model = build_classifier(dims, 2, spec).to(device)
    figures = {}
    for kind, shape in (("image", image), ("latent", latent)):
        timing = {"warmup": 1, "iterations": sizes["iterations"], "device": device}
        single = latency_ms(model, shape, batch_size=1, **timing)
        batched = latency_ms(model, shape, batch_size=sizes["batch"], **timing)
        figures[kind] = {
            "shape": shape,
            "latency_ms": round(single, 2),
            "samples_per_s": round(1000 * sizes["batch"] / batched, 2),
            "max_batch_size": max_batch_size(model, shape, MAX_BATCH_CAP[device.type], device),
        }
    image_figures, latent_figures = figures["image"], figures["latent"]
    gains = {
        "throughput": latent_figures["samples_per_s"] / image_figures["samples_per_s"],
        "latency": image_figures["latency_ms"] / latent_figures["latency_ms"],
        "max_batch": latent_figures["max_batch_size"] / max(image_figures["max_batch_size"], 1),
    }
    return {
        "classifier": spec["name"],
        "f": f,
        "throughput_batch": sizes["batch"],
        **figures,
        "gain": {name: round(value, 1) for name, value in gains.items()},
        "paper_gain": paper,
        **({"note": "max batch capped on CPU: a lower bound"} if device.type == "cpu" else {}),
    }


def to_markdown(results: dict) -> str:
    """A readable table: each figure beside its goal or the paper's figure."""
    lines = ["# MedLatent GPU benchmark", "", f"Device: {results['device']}", ""]
    if results["quick"]:
        lines += ["**Quick mode**: shrunk sizes and widths; these figures are NOT the paper's conditions.", ""]
    lines += [
        "## Extraction vs bare encoder (random weights)",
        "",
        "| model | ch | input | batch | precision | extract items/s | bare items/s | pipeline/bare | goal "
        "| peak GB | error vs fp32 (max abs / rel) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["extraction"]:
        peak = f"{row['peak_gpu_gb']} GPU" if "peak_gpu_gb" in row else f"{row['peak_rss_gb']} RSS"
        error = row["precision_error"]
        error = f"{error['max_abs']} / {error['max_rel']}" if error else "-"
        lines.append(
            f"| {row['model']} | {row['ch']} | {'x'.join(map(str, row['input_shape']))} | {row['batch_size']} "
            f"| {row['precision']} | {row['extract_items_per_s']} | {row['bare_encoder_items_per_s']} "
            f"| {row['pipeline_vs_bare']} | {row['goal_pipeline_vs_bare']} | {peak} "
            f"| {error} |"
        )
    if not results["classifiers"]:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "## CAD classifiers: images vs latents",
        "",
        "| classifier | figure | image | latent | gain | paper |",
    ]
    lines.append("|---|---|---|---|---|---|")
    for row in results["classifiers"]:
        for figure, key, gain in (
            ("latency ms (batch 1)", "latency_ms", "latency"),
            (f"samples/s (batch {row['throughput_batch']})", "samples_per_s", "throughput"),
            ("max training batch", "max_batch_size", "max_batch"),
        ):
            paper = row["paper_gain"].get(gain)
            lines.append(
                f"| {row['classifier']} (f={row['f']}) | {figure} | {row['image'][key]} | {row['latent'][key]} "
                f"| x{row['gain'][gain]} | {f'x{paper}' if paper else '-'} |"
            )
        if "note" in row:
            lines.append(f"| {row['classifier']} | note | {row['note']} | | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-results/bench-gpu.json")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="shrunk sizes (a few minutes on 2 CPU cores)")
    parser.add_argument("--models", nargs="*", default=list(RELEASED), help="released architectures to time")
    parser.add_argument("--max-memory-gb", type=float, default=16.0, help="latents.max_memory_gb (schema default)")
    parser.add_argument("--workers", type=int, default=WORKERS, help="latents.workers (schema default)")
    parser.add_argument("--precision", choices=list(AUTOCAST), default="fp32", help="latents.precision")
    parser.add_argument("--no-classifiers", action="store_true", help="extraction only (e.g. a second precision)")
    for key in FULL:
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, help=f"override the {key} size")
    args = parser.parse_args(argv)
    sizes = {**(QUICK if args.quick else FULL)}
    sizes.update({key: getattr(args, key) for key in FULL if getattr(args, key) is not None})
    device = torch.device(args.device)
    # the cuDNN settings extract_shards runs under, for the bare encoder too
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    started = time.perf_counter()
    results = {
        "machine": machine(),
        "device": device_name(device),
        "quick": args.quick,
        "sizes": sizes,
        "max_memory_gb": args.max_memory_gb,
        "extraction": [
            extraction(name, sizes, device, args.max_memory_gb, args.workers, args.precision) for name in args.models
        ],
        "classifiers": [] if args.no_classifiers else [classifier(dims, sizes, device) for dims in (2, 3)],
    }
    results["wall_s"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    write_text(out, json.dumps(results, indent=2, sort_keys=True) + "\n")
    write_text(out.with_suffix(".md"), to_markdown(results))
    print(to_markdown(results))
    print(f"wrote {out} and {out.with_suffix('.md')} in {results['wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
