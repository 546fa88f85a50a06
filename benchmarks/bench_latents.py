"""Latent extraction end to end beside the bare encoder forward on the same tensors; loader speed.

End to end is `extract_shards` on one shard as a CPU job runs it (the shard read in the encoding process: see
`medlatent.commands.latents`): HDF5 reads and decompression, the encoder, float16, tar and
sidecar writing, hashing and the part record. Bare is `encode_latent_padded` on the same
images, already in memory, in the same batches (3D: one volume per forward, no windows since
each volume fits). All run after a warm-up forward (the first call of a shape builds its oneDNN
kernels) and five times, alternately; the fastest of each counts. `pipeline_vs_bare` = bare
seconds / end-to-end seconds (goal >= 0.95); `pipeline_vs_bare_2_workers` is the same with
`latents.workers` reader processes (the schema default, what a GPU job uses), which on a CPU
compete with the encoder for its cores; `pipeline_vs_bare_cpu_seconds` compares CPU seconds,
steadier than wall time on a machine shared with other load. The
loader figure is samples/s of `load_latents` over the written tar (decode to float32 tensors
plus JSON).

`precision_error`: `latents.precision` bf16 and fp16 against fp32 on the 2D case's first batch,
as extraction records it in the part record and the dataset card.

`full_size_peak`: peak RSS of encoding ONE full-size item through a released-layout encoder
(`published_spec`: ch=128, 2 res blocks, random weights) in a fresh process, beside the
`latents.max_memory_gb` estimate for it (goal: <= 6 GB for a 1024x1024 image): f16 and f64 at
1024x1024. The 3D 160^3 window (f64_c1_3d) takes ~3 minutes and ~11 GB on 2 CPU cores, so it runs
only on request: `python benchmarks/bench_latents.py --full-3d`.

`shard_bytes`: bytes on disk per sample (tar and sidecar) for a 512-byte and a 128-byte latent
(goal: <= 2048 bytes for 512), and the per-sample overhead (bytes per sample minus the latent).
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from process_memory import resident_gb

from medlatent.core.allocator import tune_memory_allocation
from medlatent.core.ids import item_id
from medlatent.io.h5 import ShardReader, ShardWriter
from medlatent.latents.extract import extract_shards
from medlatent.latents.index import read_parts, write_dataset_files
from medlatent.latents.loader import load_latents
from medlatent.latents.memory import budget_batch_size, encoder_item_bytes
from medlatent.models import load_model
from medlatent.models.projection import CLASSIFICATION_SCALE
from medlatent.models.registry import build_medvae, create_autoencoder, published_spec, save_model

#: Demo-sized networks (as workflow/demo/config.yaml) on larger images than the demo's.
CASES = {
    "2d_f16_c1_256px": (
        {
            "id": "bench2d",
            "dims": 2,
            "f": 16,
            "latent_channels": 1,
            "ch": 16,
            "ch_mult": [1, 2, 2],
            "num_res_blocks": 1,
            "norm_groups": 8,
        },
        (256, 256),
        # a real job encodes thousands of images per model load; at 24 (one second of encoder) the
        # job's fixed costs (loading the weights, hashing them, the record) alone cost 0.03 of the ratio
        64,
    ),
    "3d_f64_c1_64vox": (
        {
            "id": "bench3d",
            "dims": 3,
            "f": 64,
            "latent_channels": 1,
            "ch": 16,
            "ch_mult": [1, 2, 2],
            "num_res_blocks": 1,
            "norm_groups": 8,
        },
        # 64^3, not 48^3: at 0.1 s a volume, the ratio swung 0.80-1.09 between runs of the same code
        (64, 64, 64),
        24,  # enough volumes that a timing is seconds, not the per-job start alone
    ),
}
BATCH_SIZE = 8
#: The schema default of latents.workers.
WORKERS = 2
#: Five: on shared 2-core machines one encoder pass over the same volumes varies by +-15 %.
REPEATS = 5
GOAL_PIPELINE = ">= 0.95"
PRECISIONS = ("bf16", "fp16")
FULL_SIZES = (("f16_c1", (1024, 1024)), ("f64_c1", (1024, 1024)))
FULL_3D = ("f64_c1_3d", (160, 160, 160))
GOAL_PEAK_RSS_GB = {2: "<= 6"}
#: A 1-channel f=4 model (/2 per side): 32x32 images give 1x16x16 float16 latents (512 bytes), 16x16 give 128.
COMPACT_MODEL = {
    "id": "benchsmall",
    "dims": 2,
    "f": 4,
    "latent_channels": 1,
    "ch": 8,
    "ch_mult": [1, 2],
    "num_res_blocks": 1,
    "norm_groups": 4,
}
COMPACT_SAMPLES = 256
GOAL_BYTES_PER_SAMPLE_512B = "<= 2048"
LOADER_PASSES = 3


def _item_meta(shape: tuple[int, ...], index: int) -> dict:
    """Item attributes that differ per item, as acquired images' do: they cost sidecar bytes per sample."""
    original = [side * 4 + 3 * index for side in shape]
    return {
        "original_shape": original,
        "spacing": [round(0.1 + 0.001 * index, 4)] * len(shape),
        "split": "train",
        "transform": {
            "scale": round(shape[0] / max(original), 6),
            "pad_offset": [index % 5] * len(shape),
            "resized_shape": list(shape),
        },
    }


def _write_inputs(folder: Path, spec: dict, shape: tuple[int, ...], count: int) -> tuple[Path, pd.DataFrame, Path]:
    rng = np.random.default_rng(0)
    shard = folder / "train-000.h5"
    rows = []
    with ShardWriter(shard, {"shard": "train-000", "normalize": {}, "demo": True}) as writer:
        for index in range(count):
            item = item_id("bench", f"{index:016x}")
            writer.add(
                item,
                rng.uniform(-1, 1, size=shape).astype(np.float32),
                _item_meta(shape, index),
            )
            rows.append({"item_id": item, "split": "train", "shard": "train-000", "label_finding": index % 2})
    weights = folder / "stage2.pt"
    torch.manual_seed(0)
    save_model(weights, build_medvae(spec, is_demo=True), embedder="demo", steps=0)
    return shard, pd.DataFrame(rows), weights


def extract_spec(spec: dict, **settings) -> dict:
    """latents_extract_slice of a bench model (schema defaults; 3D volumes fit one window); `settings` override."""
    return {
        "model": spec["id"],
        "source": "bench",
        "modality": "ct" if spec["dims"] == 3 else "xray",
        "dims": spec["dims"],
        "batch_size": BATCH_SIZE,
        "max_memory_gb": 8,
        "precision": "fp32",
        "store": ["mean"] if spec["dims"] == 2 else [],  # the default latents.store
        "timm_json": False,
        **(
            {"window": [160, 160, 160], "overlap": 0.25, "blend": "gaussian", "sw_batch_size": 1}
            if spec["dims"] == 3
            else {}
        ),
        **settings,
    }


def _timed(run: Callable[[], object]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (this process's threads plus reaped children: the reader workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    return time.perf_counter() - wall, time.process_time() - cpu + child_cpu


def _bare(model: torch.nn.Module, images: torch.Tensor, dims: int) -> None:
    step = BATCH_SIZE if dims == 2 else 1
    with torch.inference_mode():
        for start in range(0, len(images), step):
            model.encode_latent_padded(images[start : start + step])


def _extract(extract: dict, shard: Path, manifest: pd.DataFrame, weights: Path, workers: int) -> None:
    folder = shard.parent
    extract_shards(extract, [shard], manifest, weights, folder / "ds", folder / "part.json", workers=workers)


def _write_index(folder: Path, spec: dict) -> dict:
    """index.json, _info.json and the card of the dataset `folder / "ds"` from `folder / "part.json"`."""
    (folder / "card.json").write_text("{}", encoding="utf-8")
    return write_dataset_files(
        {
            "model": spec["id"],
            "source": "bench",
            "source_name": "bench",
            "anatomy": None,
            "modality": "ct" if spec["dims"] == 3 else "xray",
            "dims": spec["dims"],
            "license": {"name": "none"},
            "classification_scale": CLASSIFICATION_SCALE,
            "config_sha256": "",
        },
        [folder / "part.json"],
        folder / "card.json",
        folder / "ds",
    )


def _time_case(spec: dict, shape: tuple[int, ...], count: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shard, manifest, weights = _write_inputs(folder, spec, shape, count)
        extract = extract_spec(spec)
        model = load_model(weights)
        with ShardReader(shard) as reader:
            images = torch.from_numpy(np.stack([array for _, array, _ in reader]))[:, None]
        _bare(model, images[:BATCH_SIZE], spec["dims"])  # warm-up
        runs = {
            "bare": lambda: _bare(model, images, spec["dims"]),
            "end_to_end": lambda: _extract(extract, shard, manifest, weights, 0),
            "with_workers": lambda: _extract(extract, shard, manifest, weights, WORKERS),
        }
        timings = {name: [] for name in runs}
        # Alternately, so that load from elsewhere hits all alike, and in reversed order every other
        # round: a process's passes can slow down over its first minutes, which would favour the first.
        for repeat in range(REPEATS):
            for name in list(runs)[:: 1 if repeat % 2 == 0 else -1]:
                timings[name].append(_timed(runs[name]))
        bare_s, bare_cpu = map(min, zip(*timings["bare"]))
        end_to_end_s, end_to_end_cpu = map(min, zip(*timings["end_to_end"]))
        with_workers = [seconds for seconds, _ in timings["with_workers"]]
        [part] = read_parts([folder / "part.json"])
        _write_index(folder, spec)
        started = time.perf_counter()
        loaded = sum(1 for _ in range(LOADER_PASSES) for _ in load_latents(folder / "ds", split="train"))
        loader = time.perf_counter() - started
    return {
        "items": count,
        "input_shape": list(shape),
        "latent_shape": part["latent_shapes"][0],
        "extract_items_per_s": round(count / end_to_end_s, 2),
        "bare_encoder_items_per_s": round(count / bare_s, 2),
        "pipeline_vs_bare": round(bare_s / end_to_end_s, 3),
        "goal_pipeline_vs_bare": GOAL_PIPELINE,
        f"pipeline_vs_bare_{WORKERS}_workers": round(bare_s / min(with_workers), 3),
        "pipeline_vs_bare_cpu_seconds": round(bare_cpu / end_to_end_cpu, 3),
        "tar_mb": round(part["bytes"] / 1e6, 3),
        "loader_samples_per_s": round(loaded / loader, 1),
    }


def precision_error(case: str = "2d_f16_c1_256px") -> dict:
    """The error against fp32 that extraction records for each lower precision, on one batch of `case`."""
    spec, shape, _ = CASES[case]
    figures = {"case": case, "items": BATCH_SIZE}
    with tempfile.TemporaryDirectory() as tmp:
        shard, manifest, weights = _write_inputs(Path(tmp), spec, shape, BATCH_SIZE)
        for precision in PRECISIONS:
            [part] = extract_shards(
                extract_spec(spec, precision=precision),
                [shard],
                manifest,
                weights,
                Path(tmp) / "ds",
                Path(tmp) / "part.json",
            )
            figures[precision] = {key: part["precision_error"][key] for key in ("max_abs", "max_rel")}
    return figures


def _encode_one_full_size_item(name: str, shape: tuple[int, ...]) -> dict:
    """In its own process, so that its peak resident memory is this encoding's alone (allocation set as a CLI job's)."""
    tune_memory_allocation()
    torch.manual_seed(0)
    autoencoder = create_autoencoder(published_spec(name)).eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in autoencoder.parameters())
    image = torch.rand(1, 1, *shape) * 2 - 1
    started = time.perf_counter()
    with torch.inference_mode():
        latent = autoencoder.encode_padded(image)[0].mean
    goal = GOAL_PEAK_RSS_GB.get(len(shape))
    return {
        "model": name,
        "ch": autoencoder.config["ch"],
        "input_shape": list(shape),
        "latent_shape": list(latent.shape[1:]),
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_gb": round(resident_gb("VmHWM"), 2),
        "estimate_gb": round((weight_bytes + encoder_item_bytes(autoencoder, shape)) / 2**30, 2),
        "batch_size_at_16_gb": budget_batch_size(autoencoder, shape, 16, 64, "latents.max_memory_gb"),
        **({"goal_peak_rss_gb": goal} if goal else {}),
    }


def full_size_peak(name: str, shape: tuple[int, ...]) -> dict:
    """Peak RSS of one full-size item through a released-layout encoder, measured in a fresh process."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_encode_one_full_size_item, name, shape).result()


def _shard_bytes_case(shape: tuple[int, ...], timm_json: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shard, manifest, weights = _write_inputs(folder, COMPACT_MODEL, shape, COMPACT_SAMPLES)
        extract = extract_spec(COMPACT_MODEL, store=[], timm_json=timm_json)
        [part] = extract_shards(extract, [shard], manifest, weights, folder / "ds", folder / "part.json")
        storage = _write_index(folder, COMPACT_MODEL)["storage"]
    return {
        "latent_shape": part["latent_shapes"][0],
        "latent_bytes": part["latent_float16_bytes"] // COMPACT_SAMPLES,
        "timm_json": timm_json,
        "bytes_per_sample": storage["bytes_per_sample"],
        "overhead_bytes_per_sample": storage["overhead_bytes_per_sample"],
        "tar_bytes_per_sample": round(part["bytes"] / COMPACT_SAMPLES, 1),
        "sidecar_bytes_per_sample": round(part["sidecar_bytes"] / COMPACT_SAMPLES, 1),
    }


def shard_bytes() -> dict:
    """On-disk bytes per sample (tar + sidecar, labels and meta included) of small latents, `latents.store: []`.

    One shard of COMPACT_SAMPLES samples; a shard's fixed part (two tar end blocks, the sidecar's
    shared fields: about 1.7 KB) is spread over its samples. `timm_json` adds the json member.
    """
    return {
        "samples_per_shard": COMPACT_SAMPLES,
        "latent_512B": {
            **_shard_bytes_case((32, 32), timm_json=False),
            "goal_bytes_per_sample": GOAL_BYTES_PER_SAMPLE_512B,
        },
        "latent_512B_timm_json": _shard_bytes_case((32, 32), timm_json=True),
        "latent_128B": _shard_bytes_case((16, 16), timm_json=False),
    }


def run() -> dict:
    """Figures per case (see the module docstring); CPU threads as torch has them."""
    return {
        "threads": torch.get_num_threads(),
        "batch_size": BATCH_SIZE,
        **{name: _time_case(*case) for name, case in CASES.items()},
        "precision_error": precision_error(),
        "full_size_peak": {name: full_size_peak(name, shape) for name, shape in FULL_SIZES},
        "shard_bytes": shard_bytes(),
    }


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-3d", action="store_true", help=f"only the full-size peak of {FULL_3D}")
    args = parser.parse_args()
    print(json.dumps(full_size_peak(*FULL_3D) if args.full_3d else run(), indent=1))
