"""Other autoencoder families at real width on CPU: peak memory beside the estimate, family vs bare encode.

Each case builds a random-weight instance of a public architecture with its library's class
(SDXL-VAE's `AutoencoderKL` configuration, MAISI's released CT configuration, Wan 2.1's VAE),
saves it in the library's format, imports it as the workflow does (`import_family`,
`load_latent_model`) and, in a fresh process (so that its peak memory is this encoding's alone,
allocation set as a CLI job's), encodes ONE item of the case's shape through the family
(`LatentModel.encode`: adaptation, padding, the library's encode) and then through the library's
bare encode on the already adapted input. `peak_rss_gb` is the process's peak resident memory
during the first family encode (Linux VmHWM, reset after loading the weights; process and
weights included), `encode_peak_gb` its rise over the memory held before the encode, beside
`estimate_activations_gb` (`item_bytes`); the timings are the fastest of two alternated rounds
after it. `estimate_gb` is what `latents.max_memory_gb`
batching assumes (weights + `item_bytes` of the model's `budget_unit`: a video VAE's whole
volume). `family_vs_bare` = bare seconds / family seconds (goal >= 0.95: the adaptation costs
nothing). Default sizes keep `make bench` short; `--full` runs real sizes (SDXL-VAE
at 1024x1024, MAISI at 160^3, Wan 2.1 on 160 slices of 256x256), which take minutes and tens
of GB on a CPU.
"""

from __future__ import annotations

import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
from process_memory import reset_peak, resident_gb

from medlatent.core.allocator import tune_memory_allocation
from medlatent.models.families import import_family, load_latent_model

SDXL_VAE = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
    "latent_channels": 4, "norm_num_groups": 32, "sample_size": 1024, "scaling_factor": 0.13025,
}  # fmt: skip
WAN21_VAE = {"base_dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2}
#: case -> (family, library class or None for MAISI, its config, default item shape, --full shape)
CASES = {
    "sdxl_vae": ("diffusers", "AutoencoderKL", SDXL_VAE, (512, 512), (1024, 1024)),
    "maisi_ct": ("maisi", None, {}, (64, 64, 64), (160, 160, 160)),
    "wan21_vae": ("diffusers", "AutoencoderKLWan", WAN21_VAE, (128, 128, 17), (256, 256, 160)),
}
GOAL_FAMILY_VS_BARE = ">= 0.95"


def _weights(folder: Path, family: str, class_name: str | None, config: dict) -> Path:
    """A random-weight instance saved as its library saves it (diffusers folder, MAISI state dict)."""
    torch.manual_seed(0)
    if family == "maisi":
        from medlatent.models.families.maisi import RELEASED_CT, build

        path = folder / "autoencoder.pt"
        torch.save(build({**RELEASED_CT, "norm_float16": False}).state_dict(), path)
        return path
    import diffusers

    getattr(diffusers, class_name)(**config).save_pretrained(folder / "vae")
    return folder / "vae"


def _bare(model, images: torch.Tensor) -> None:
    """The library's own encode on the input the family builds."""
    inner = getattr(model, "autoencoder", None)
    if inner is not None:  # MAISI: (x + 1) / 2 of the padded volume
        from medlatent.models.families.base import pad_items

        inner.encode((pad_items(images, model.factors)[0] + 1) / 2)
    else:
        model.vae.encode(model.adapt(images)[0])


def _encode_in_this_process(stage2: Path, shape: tuple[int, ...], rounds: int) -> dict:
    """Peak memory of the first family encode (after loading), then the fastest of `rounds` alternated timings."""
    tune_memory_allocation()
    model = load_latent_model(stage2).placed("cpu")
    images = torch.rand(1, *shape) * 2 - 1
    unit = model.budget_unit(shape)
    timings: dict[str, list[float]] = {"family": [], "bare": []}
    with torch.inference_mode():
        reset_peak()
        before = resident_gb("VmRSS")
        latent = model.encode(images)[0]["latent"]
        peak = resident_gb("VmHWM")
        for _ in range(rounds):
            for name, encode in (("family", lambda: model.encode(images)), ("bare", lambda: _bare(model, images))):
                started = time.perf_counter()
                encode()
                timings[name].append(time.perf_counter() - started)
    family, bare = min(timings["family"]), min(timings["bare"])
    return {
        "input_shape": list(shape),
        "latent_shape": list(latent.shape[1:]),
        "family_seconds": round(family, 2),
        "bare_seconds": round(bare, 2),
        "family_vs_bare": round(bare / family, 3),
        "goal_family_vs_bare": GOAL_FAMILY_VS_BARE,
        "peak_rss_gb": round(peak, 2),
        "estimate_gb": round((model.weight_bytes() + model.item_bytes(unit)) / 2**30, 2),
        "encode_peak_gb": round(peak - before, 2),
        "estimate_activations_gb": round(model.item_bytes(unit) / 2**30, 2),
    }


def measure(case: str, shape: tuple[int, ...], rounds: int = 2) -> dict:
    """One case: weights written and imported here, encoded in a fresh process (after one warm-up encode)."""
    family, class_name, config, _, _ = CASES[case]
    with tempfile.TemporaryDirectory() as tmp:
        weights = _weights(Path(tmp), family, class_name, config)
        apply = "images" if len(shape) == 2 else "volumes"
        entry = {"id": case, "family": family, "weights": str(weights), "apply": apply, "dims": len(shape)}
        import_family(weights, entry, True, Path(tmp) / "stage2.pt")
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            figures = pool.submit(_encode_in_this_process, Path(tmp) / "stage2.pt", shape, rounds).result()
    return {"family": family, "class": class_name or "AutoencoderKlMaisi", **figures}


def run(full: bool = False) -> dict:
    """Every case at its default size (or the --full size)."""
    return {
        "threads": torch.get_num_threads(),
        **{case: measure(case, c[4 if full else 3]) for case, c in CASES.items()},
    }


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="real sizes (minutes, GBs)")
    parser.add_argument("--case", choices=sorted(CASES), help="one case only")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(measure(args.case, CASES[args.case][4 if args.full else 3]), indent=1))
    else:
        print(json.dumps(run(args.full), indent=1))
