"""`make gpu-check`: the one prepared device check, everything under one output folder.

GPU time is short and scarce, so this runs as one command that measures and does not stop at
the first failure: each phase is timed, and a phase that fails is recorded with its error while
the next one still runs. Phases (figures in `<out>/gpu-check.json` and `<out>/summary.md`):

1. `bench_bf16`: `bench_gpu` at bf16, every released architecture (extraction vs the bare
   encoder, peak memory, the error against fp32) and the CAD classifiers on images vs latents.
2. `bench_fp32`: `bench_gpu` at fp32 for the two 2D C1 architectures (f16, f64), extraction only,
   so that bf16's speed-up and error stand beside fp32.
3. `train_smoke`: real-size training for about `--train-seconds` each, random weights, through
   the workflow's own stage objects (`train.stages.AdversarialStage`) from `disc_start` on, so the
   discriminator trains: stage 1 of f16 C1 at ch=128 on 384^2 crops, batch 8, bf16, full-width
   VGG16-LPIPS; 3D stage 2 of f64 (inflated from f16 C1, ch=128) on 64^3 patches, batch 2.
   Steps/s, samples/s and peak memory.
4. `demo_extraction`: the demo's latent extraction through snakemake with `--resources gpu=1`
   (the GPU slot allocator, the DataLoader readers, pinned memory), then again on the CPU
   (CUDA_VISIBLE_DEVICES empty) from the same normalized shards and weights: are the tars the
   same bytes at fp32, and if not, by how much do the latents differ. The demo models are the
   demo's architectures with random weights imported as files (`weights:`), so no training runs.

`--quick` shrinks every phase to a few minutes on 2 CPU cores (the test runs it); its figures
are not the paper's conditions, and the summary says so.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

import bench_gpu
import numpy as np
import torch
import yaml
from bench import machine
from bench_train import peak_mb, reset_peak

from medlatent import config as mlconfig
from medlatent.core.atomic import write_text
from medlatent.evaluate.efficiency import device_name, synchronize
from medlatent.models.inflate import inflate_model
from medlatent.models.perceptual import DEMO_WIDTH_DIVISOR, LPIPS
from medlatent.models.registry import build_medvae, create_autoencoder, save_model
from medlatent.train import ddp, recipes, stages

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "config.yaml"
DEMO = REPO / "workflow" / "demo" / "config.yaml"
PHASES = ("bench_bf16", "bench_fp32", "train_smoke", "demo_extraction")
#: The 2D C1 architectures timed at fp32 too.
FP32_MODELS = ["f16_c1", "f64_c1"]
#: Real-size training: (recipe model, stage, input side, micro-batch, precision).
TRAIN_FULL = {"stage1_f16_c1": ("medvae_f16_c1", "stage1", 384, 8, "bf16-mixed"),
              "stage2_3d_f64_c1": ("medvae3d_f64_c1", "stage2", 64, 2, "bf16-mixed")}  # fmt: skip
TRAIN_QUICK = {"stage1_f16_c1": ("medvae_f16_c1", "stage1", 32, 2, "32"),
               "stage2_3d_f64_c1": ("medvae3d_f64_c1", "stage2", 24, 1, "32")}  # fmt: skip
#: Width of the quick training networks (the real one is the recipe's ch=128).
QUICK_CH = 8
#: One 2D demo source and model in quick mode (the 3D extraction path has tests of its own); the whole demo otherwise.
QUICK_DEMO = {"sources": ["demo_cxr"], "models": ["demo_f16_c1"]}
BENCH_QUICK_ARGS = ["--quick", "--image", "64", "--volume", "32", "--ch", "8", "--items-2d", "2"]
#: Quick bf16 bench: one 2D and one 3D architecture.
QUICK_BF16_MODELS = ["f16_c1", "f512_c1_3d"]


def _bench(out: Path, device: torch.device, quick: bool, extra: list[str]) -> dict:
    argv = ["--device", device.type, "--out", str(out), *(BENCH_QUICK_ARGS if quick else []), *extra]
    bench_gpu.main(argv)
    return json.loads(out.read_text())


def _training_entry(config: dict, model_id: str, quick: bool) -> tuple[dict, torch.nn.Module]:
    """A recipe model entry (narrowed in quick mode) and its random autoencoder; 3D ones inflated from the parent."""

    def entry(name: str) -> dict:
        model = mlconfig.model_entry(config, name)
        return {**model, "ch": QUICK_CH, "norm_groups": QUICK_CH} if quick else model

    model = entry(model_id)
    source = model if model["dims"] == 2 else entry(model["inflate_from"])
    autoencoder = create_autoencoder(source)
    return model, autoencoder if model["dims"] == 2 else inflate_model(autoencoder)


def train_smoke(name: str, quick: bool, seconds: float, device: torch.device) -> dict:
    """Steps/s and peak memory of one real-size training stage for about `seconds` (after one warm-up step)."""
    model_id, stage_name, side, batch, precision = (TRAIN_QUICK if quick else TRAIN_FULL)[name]
    config = mlconfig.load(RECIPE)
    model, autoencoder = _training_entry(config, model_id, quick)
    settings = mlconfig.train_slice(config, model_id, stage_name)["train"]
    torch.manual_seed(0)
    # VGG16-LPIPS with random weights (full width but in quick mode): the real network's cost, not its features
    perceptual = LPIPS(
        "lpips-vgg16 (random init, not pretrained: gpu check)",
        is_demo=True,
        width_divisor=DEMO_WIDTH_DIVISOR if quick else 1,
    )
    perceptual.freeze()
    loss = recipes.adversarial_loss(settings, model["dims"], perceptual, None)
    context = ddp.Context(0, 1, device)
    stage = stages.AdversarialStage(autoencoder, loss, recipes.effective_lr(settings), precision, context)
    x = (torch.rand(batch, 1, *(side,) * model["dims"], generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)
    step = settings["disc_start"]  # from here on the discriminator trains too

    def one_step() -> dict[str, float]:
        nonlocal step
        logs = stage.micro_step(x, step, 1.0, synchronize=True)
        stage.optimizer_step(step)
        step += 1
        return logs

    one_step()  # warm-up: kernels, allocator, cuDNN autotuning
    synchronize(device)
    reset_peak(device)
    started, steps, logs = time.perf_counter(), 0, {}
    while steps < 2 or time.perf_counter() - started < seconds:
        logs = one_step()
        steps += 1
    synchronize(device)
    elapsed = time.perf_counter() - started
    return {
        "model": model_id,
        "stage": stage_name,
        "ch": model["ch"],
        "input": list(x.shape),
        "precision": precision,
        "steps": steps,
        "seconds": round(elapsed, 1),
        "steps_per_s": round(steps / elapsed, 3),
        "samples_per_s": round(steps * batch / elapsed, 2),
        f"peak_{'gpu' if device.type == 'cuda' else 'rss'}_gb": round(peak_mb(device) / 2**10, 2),
        "losses_finite": all(np.isfinite(value) for value in logs.values()),
        "weights": "random init (LPIPS and discriminator too): speed and memory only",
    }


def _demo_override(folder: Path, quick: bool) -> Path:
    """A config on top of the demo's: its models as random weight files (no training), fp32 extraction."""
    demo = yaml.safe_load(DEMO.read_text())
    keep = QUICK_DEMO if quick else {"sources": [s["id"] for s in demo["sources"]], "models": None}
    models = []
    for entry in demo["models"]:
        if keep["models"] is not None and entry["id"] not in keep["models"]:
            continue
        torch.manual_seed(len(models))
        weights = folder / "weights" / f"{entry['id']}.pt"
        save_model(weights, build_medvae(entry, is_demo=True), embedder="none (random init: gpu check)", steps=0)
        models.append({**{k: v for k, v in entry.items() if k not in ("init", "lora")}, "weights": str(weights)})
    override = {
        "sources": [s for s in demo["sources"] if s["id"] in keep["sources"]],
        "models": models,
        # the CAD configuration must name only what is kept (validation), though no CAD job runs
        "cad_tasks": [t for t in demo["cad_tasks"] if t["source"] in keep["sources"]],
        "evaluation": {"cad": {"models": [m["id"] for m in models]}},
        "latents": {**demo["latents"], "precision": "fp32", "gpus": 1, "workers": 2},
    }
    path = folder / "gpu-check-config.yaml"
    write_text(path, yaml.safe_dump(override, sort_keys=False))
    return path


def _snakemake(workdir: Path, override: Path, env: dict, *args: str) -> float:
    # the target first: options such as --forcerun take every word after them
    command = [sys.executable, "-m", "snakemake", "latents", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               "--configfile", str(DEMO), str(override), "--cores", "all", "--resources", "gpu=1",
               "--rerun-incomplete", *args]  # fmt: skip
    started = time.perf_counter()
    log = workdir.parent / f"snakemake-{'cpu' if env.get('CUDA_VISIBLE_DEVICES') == '' else 'default'}.log"
    with log.open("a") as handle:
        subprocess.run(command, env=env, stdout=handle, stderr=subprocess.STDOUT, check=True, timeout=900)
    return round(time.perf_counter() - started, 1)


def _tars(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.tar"))}


def _npy_arrays(data: bytes) -> dict[str, np.ndarray]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {
            m.name: np.load(io.BytesIO(tar.extractfile(m).read())) for m in tar.getmembers() if m.name.endswith(".npy")
        }


def compare_tars(first: dict[str, bytes], second: dict[str, bytes]) -> dict:
    """Byte identity per tar; where they differ, the largest latent difference."""
    different = sorted(name for name in first if first[name] != second.get(name))
    max_abs = 0.0
    for name in different:
        if name not in second:
            continue
        a, b = _npy_arrays(first[name]), _npy_arrays(second[name])
        for member in a.keys() & b.keys():
            diff = np.abs(a[member].astype(np.float64) - b[member].astype(np.float64))
            max_abs = max(max_abs, float(diff.max(initial=0.0)))
    return {
        "tars": len(first),
        "identical": len(first) - len(different),
        "different": different,
        "missing_in_second": sorted(first.keys() - second.keys()),
        "max_abs_latent_difference": max_abs,
    }


def _part_devices(workdir: Path) -> list[str]:
    """The devices the extraction jobs' part records name."""
    records = [json.loads(p.read_text()) for p in (workdir / "data" / "latent_parts").rglob("*.json")]
    return sorted({part["device"] for record in records for part in record["parts"]})


def demo_extraction(folder: Path, quick: bool) -> dict:
    """The demo's extraction via snakemake with a GPU slot, then on the CPU; the tars compared."""
    workdir = folder / "demo-run"
    workdir.mkdir(parents=True, exist_ok=True)
    override = _demo_override(folder, quick)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    first_s = _snakemake(workdir, override, env)
    first, first_devices = _tars(workdir / "data" / "latents"), _part_devices(workdir)
    shutil.copytree(workdir / "data" / "latents", folder / "latents-first", dirs_exist_ok=True)
    cpu_s = _snakemake(workdir, override, {**env, "CUDA_VISIBLE_DEVICES": ""}, "--forcerun", "extract_latents")
    return {
        "run_with_gpu_slot_s": first_s,
        "run_with_gpu_slot_devices": first_devices,
        "cpu_rerun_s": cpu_s,
        "cpu_rerun_devices": _part_devices(workdir),
        **compare_tars(first, _tars(workdir / "data" / "latents")),
        "note": "fp32; the first run includes fetch, curation, normalization and weight import; "
        "the second reruns extraction only",
    }


def _phase(results: dict, name: str, run) -> None:
    started = time.perf_counter()
    try:
        results[name] = {"ok": True, **run()}
    except Exception as error:  # noqa: BLE001 - one failed phase must not cost the others their GPU time
        results[name] = {"ok": False, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    results[name]["wall_s"] = round(time.perf_counter() - started, 1)
    print(f"gpu-check: {name} {'done' if results[name]['ok'] else 'FAILED'} in {results[name]['wall_s']} s", flush=True)


def summary(results: dict) -> str:
    """The Markdown summary: the two bench tables, then the training and extraction figures."""
    lines = ["# MedLatent GPU check", "", f"Device: {results['device']}", ""]
    if results["quick"]:
        lines += ["**Quick mode**: shrunk sizes and widths; these figures are NOT the paper's conditions.", ""]
    lines += ["| phase | ok | wall s |", "|---|---|---|"]
    lines += [f"| {name} | {results[name]['ok']} | {results[name]['wall_s']} |" for name in results["phases"]]
    for name in ("bench_bf16", "bench_fp32"):
        if results.get(name, {}).get("ok"):
            lines += ["", f"## {name}", "", (results["out"] / f"{name}.md").read_text()]
    train = results.get("train_smoke", {})
    if train.get("ok"):
        lines += ["", "## Real-size training (random weights)", "",
                  "| stage | model | ch | input | precision | steps/s | samples/s | peak GB | losses finite |",
                  "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for stage, row in train["stages"].items():
            peak = row.get("peak_gpu_gb", row.get("peak_rss_gb"))
            lines.append(
                f"| {stage} | {row['model']} | {row['ch']} | {'x'.join(map(str, row['input']))} | {row['precision']} "
                f"| {row['steps_per_s']} | {row['samples_per_s']} | {peak} | {row['losses_finite']} |"
            )
    demo = results.get("demo_extraction", {})
    if demo.get("ok"):
        lines += ["", "## Demo extraction: GPU slot vs CPU rerun (fp32)", "",
                  f"- devices: {demo['run_with_gpu_slot_devices']} then {demo['cpu_rerun_devices']}",
                  f"- tars identical: {demo['identical']} of {demo['tars']}; "
                  f"max |latent difference| {demo['max_abs_latent_difference']:.3g}",
                  f"- wall: {demo['run_with_gpu_slot_s']} s (whole demo up to latents), "
                  f"{demo['cpu_rerun_s']} s (CPU extraction rerun)"]  # fmt: skip
    for name in results["phases"]:
        if not results[name]["ok"]:
            detail = results[name]["traceback"] or results[name]["error"]
            lines += ["", f"## {name} FAILED", "", "```", detail.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu-check", help="the one folder everything is written to")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="shrunk sizes: a few minutes on 2 CPU cores")
    parser.add_argument("--phases", nargs="*", default=list(PHASES), choices=PHASES)
    parser.add_argument("--train-seconds", type=float, default=60.0, help="timed seconds per training stage")
    parser.add_argument("--deadline-s", type=float, default=420.0, help="start no phase after this many seconds")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    results = {"machine": machine(), "device": device_name(device), "quick": args.quick, "phases": args.phases}
    runs = {
        "bench_bf16": lambda: _bench(
            out / "bench_bf16.json",
            device,
            args.quick,
            ["--precision", "bf16", *(["--models", *QUICK_BF16_MODELS] if args.quick else [])],
        ),
        "bench_fp32": lambda: _bench(
            out / "bench_fp32.json",
            device,
            args.quick,
            ["--precision", "fp32", "--no-classifiers", "--models", *FP32_MODELS],
        ),
        "train_smoke": lambda: {
            "stages": {name: train_smoke(name, args.quick, args.train_seconds, device) for name in TRAIN_FULL}
        },
        "demo_extraction": lambda: demo_extraction(out / "demo-extraction", args.quick),
    }
    started = time.perf_counter()
    for name in args.phases:
        if time.perf_counter() - started > args.deadline_s:  # leave the device time for a rerun, not an overrun
            results[name] = {"ok": False, "error": "skipped: --deadline-s passed", "traceback": "", "wall_s": 0.0}
            continue
        _phase(results, name, runs[name])
    results["wall_s"] = round(time.perf_counter() - started, 1)
    write_text(out / "gpu-check.json", json.dumps(results, indent=2, sort_keys=True) + "\n")
    write_text(out / "summary.md", summary({**results, "out": out}))
    print(f"gpu-check: wrote {out}/gpu-check.json and summary.md in {results['wall_s']} s")
    return 0 if all(results[name]["ok"] for name in args.phases) else 1


if __name__ == "__main__":
    raise SystemExit(main())
