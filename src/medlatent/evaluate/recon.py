"""Reconstruction quality (Table 2, MediBench pillar 1) of autoencoders and interpolation round trips.

Per image type: up to N random items of the configured split, drawn once per seed; 3D volumes
centre cropped. Every method reconstructs the same items: models of every family (MedVAE,
diffusers, MAISI) through the family protocol, decoding their deterministic latent (VQ: their
codes; 2D MedVAE models slice by slice on volumes), external LDM checkpoints their posterior mean;
interpolation baselines downsize by the method's f and resize back with the same kernel. Each row
records the latent's shape and the compression ratio (item elements / latent elements).
Reconstructions are clipped to the image range [-1, 1] before scoring (the decoder output is
unbounded; images are not).

PSNR uses the data range 2 of [-1, 1]. MS-SSIM (pytorch-msssim, images mapped to [0, 1]) needs
a smaller side above (win - 1) x 2^(scales - 1): 5 scales with the 11-voxel window need more
than 160. Smaller images get as many scales as fit, with the published weights of those scales
renormalized; sides below 11 get a smaller odd window. The variant is named in every row (a
single scale is plain SSIM).

3D items are also segmented (`evaluate.segsim`): each original once, each reconstruction with the
same segmenter, and scored by SegSim and SegQC.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim
from torchmetrics.functional.image import peak_signal_noise_ratio

from medlatent.cad.data import ShardStore, fit, load_autoencoder, method_shape, resize
from medlatent.config.evaluation import segmenter_label
from medlatent.core.atomic import atomic_path
from medlatent.core.errors import InputError
from medlatent.evaluate.segsim import make_segmenter, structure_scores
from medlatent.models.families import load_latent_model
from medlatent.models.families.slices import SliceWise

log = logging.getLogger(__name__)

#: Published MS-SSIM scale weights (Wang et al. 2003), finest scale first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WIN_SIZE = 11
WIN_SIGMA = 1.5
DATA_RANGE = 2.0


# ----------------------------------------------------------------------------- metrics


def psnr(reference: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per item of (N, C, *spatial) batches in [-1, 1]; inf for identical items."""
    return peak_signal_noise_ratio(
        test, reference, data_range=DATA_RANGE, reduction="none", dim=tuple(range(1, reference.ndim))
    )


def window_size(spatial: tuple[int, ...]) -> int:
    """The 11-voxel Gaussian window, or the largest odd size that fits a smaller side (at least 3)."""
    smaller = min(spatial)
    if smaller < 3:
        raise InputError("<image>", f"smaller side {smaller} is too small for SSIM", "evaluate larger images or crops")
    return WIN_SIZE if smaller >= WIN_SIZE else smaller - (smaller + 1) % 2


def ms_ssim_scales(spatial: tuple[int, ...], win_size: int = WIN_SIZE) -> int:
    """How many MS-SSIM scales (at most 5) an image of this spatial shape supports with this window."""
    smaller = min(spatial)
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and smaller > (win_size - 1) * 2**scales:
        scales += 1
    return scales


def ms_ssim_variant(scales: int, win_size: int = WIN_SIZE) -> str:
    if scales == 1:
        return f"SSIM (win {win_size}; too small for MS-SSIM)"
    return f"MS-SSIM ({scales} scales, win {win_size})" + (
        "" if scales == len(MS_SSIM_WEIGHTS) else "; reduced for size"
    )


def ms_ssim(reference: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, str]:
    """MS-SSIM per item of (N, 1, *spatial) batches in [-1, 1], with as many scales as fit; and its variant.

    The multi-scale loop of pytorch_msssim.ms_ssim (its public function asserts 5 scales);
    with 5 scales the result equals pytorch_msssim.ms_ssim exactly.
    """
    win_size = window_size(tuple(reference.shape[2:]))
    scales = ms_ssim_scales(tuple(reference.shape[2:]), win_size)
    x, y = (reference.float() + 1) / 2, (test.float() + 1) / 2
    weights = x.new_tensor(MS_SSIM_WEIGHTS[:scales])
    weights = weights / weights.sum()
    win = _fspecial_gauss_1d(win_size, WIN_SIGMA).repeat([x.shape[1]] + [1] * (x.ndim - 1))
    pool = torch.nn.functional.avg_pool2d if x.ndim == 4 else torch.nn.functional.avg_pool3d
    factors = []
    for level in range(scales):
        ssim_per_channel, cs = _ssim(x, y, win=win, data_range=1.0, size_average=False, K=(0.01, 0.03))
        if level < scales - 1:
            factors.append(torch.relu(cs))
            padding = [s % 2 for s in x.shape[2:]]
            x, y = pool(x, kernel_size=2, padding=padding), pool(y, kernel_size=2, padding=padding)
    factors.append(torch.relu(ssim_per_channel))
    values = torch.prod(torch.stack(factors) ** weights.view(-1, 1, 1), dim=0)
    return values.mean(1), ms_ssim_variant(scales, win_size)


# ----------------------------------------------------------------------------- sampling and items


def sample_items(item_ids: list[str], n_items: int, seed: int) -> list[str]:
    """Up to n items drawn without replacement, reproducibly for (items, seed)."""
    ordered = sorted(item_ids)
    if len(ordered) <= n_items:
        return ordered
    chosen = np.random.default_rng(seed).choice(len(ordered), size=n_items, replace=False)
    return [ordered[i] for i in sorted(chosen)]


def load_item(store: ShardStore, item_id: str, crop: list[int] | None) -> torch.Tensor:
    """(1, *spatial) image; volumes centre cropped to `crop` (axes shorter than it stay whole)."""
    image = torch.from_numpy(np.array(store.read(item_id)))[None].float()
    if crop is None:
        return image
    return fit(image, [min(c, n) for c, n in zip(crop, image.shape[1:])])


# ----------------------------------------------------------------------------- reconstruction


class Reconstructor:
    """Reconstructs (1, *spatial) items with one method; autoencoders are loaded once.

    Models of every family go through the family protocol (`LatentModel.round_trip`), 2D MedVAE
    models on volumes slice-wise (`SliceWise`); only external LDM checkpoints have their own path.
    """

    def __init__(self, method: dict, weights: str | None, dims: int, batch_size: int, device: torch.device) -> None:
        self.method, self.dims, self.device = method, dims, device
        self.model = None
        if method["kind"] == "external":
            self.model = load_autoencoder(method, weights).to(device)
        elif method["kind"] != "interpolation":
            self.model = load_latent_model(weights)
            if method["kind"] == "slicewise":
                self.model = SliceWise(self.model)
                self.model.slices_per_forward = batch_size
            self.model = self.model.placed(device)
        self.demo_weights = bool(getattr(self.model, "is_demo", False))

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """The reconstruction (1, *spatial) and the shape (C, *grid) of what it was made from."""
        kind = self.method["kind"]
        if kind == "interpolation":
            shape = method_shape(list(image.shape[1:]), self.method["f"], self.dims)
            small = resize(image[None], shape, self.method["mode"])
            return resize(small, list(image.shape[1:]), self.method["mode"])[0], tuple(small.shape[1:])
        with torch.inference_mode():
            if kind == "external":
                posterior, padding = self.model.encode_padded(image[None].to(self.device))
                recon, latent = padding.crop(self.model.decode(posterior.mean))[:, 0], posterior.mean
            else:
                recon, latent = self.model.round_trip(image.to(self.device))
        return recon.float().cpu(), tuple(latent.shape[1:])

    @property
    def f(self) -> int:
        """Item pixels or voxels per latent position: the protocol's factors, or the baseline's f."""
        return (
            self.method["f"]
            if self.model is None or self.method["kind"] == "external"
            else math.prod(self.model.factors)
        )


def geometry(image: torch.Tensor, latent_shape: tuple[int, ...]) -> dict:
    """Latent shape and compression ratio (item elements / latent elements, channels included, as
    MediBench's Table 6) of one item."""
    return {
        "latent_shape": "x".join(map(str, latent_shape)),
        "compression_ratio": image.numel() / math.prod(latent_shape),
    }


def _stores(spec: dict, shard_paths: list[str]) -> dict[str, ShardStore]:
    """One store per source of the image type, over the shards of the configured split."""
    stores = {}
    for source in spec["sources"]:
        paths = [
            p for p in shard_paths if Path(p).parent.name == source and Path(p).stem.split("-")[0] == spec["split"]
        ]
        if paths:
            stores[source] = ShardStore(paths)
    if not stores:
        raise InputError(
            shard_paths[0] if shard_paths else "<no shards>",
            f"no {spec['split']} shard of image type {spec['image_type']}",
            "run the normalize jobs first",
        )
    return stores


def _sampled(spec: dict, stores: dict[str, ShardStore]) -> Iterator[tuple[int, str, str]]:
    """(seed index, source, item id) of every draw; seeds are project.seed + k."""
    pool = [(source, item) for source, store in stores.items() for item in store.where]
    by_key = {f"{source}/{item}": (source, item) for source, item in pool}
    for k in range(spec["seeds"]):
        for key in sample_items(list(by_key), spec["n_items"], spec["seed"] + k):
            yield (k, *by_key[key])


def evaluate_image_type(
    spec: dict, shard_paths: list[str], weights: dict[str, str], device: torch.device
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Per-item scores of every method on the sampled items, and example panels (original, reconstructions).

    Scores of an item are computed once and shared by every seed that drew it.
    """
    stores = _stores(spec, shard_paths)
    draws = list(_sampled(spec, stores))
    unique = sorted({(source, item) for _, source, item in draws})
    panel_items = [(source, item) for _, source, item in draws[: spec["panels"]]]
    crops = spec.get("crops", {})
    rows, panels = [], {}
    if spec["dims"] == 3:
        segment, segmenter = make_segmenter(spec["segmenter"], device), spec["segmenter"]
        originals = {}  # every method's reconstruction of an item is compared with one segmentation of it
    for method in spec["methods"]:
        reconstructor = Reconstructor(
            method, weights.get(method.get("model", method["id"])), spec["dims"], spec["batch_size"], device
        )
        scores = {}
        for source, item in unique:
            image = load_item(stores[source], item, crops.get(source))
            recon, latent_shape = reconstructor(image)
            recon = recon.clamp(-1, 1)
            value_ms, variant = ms_ssim(image[None], recon[None])
            score = {
                "psnr": float(psnr(image[None], recon[None])[0]),
                "ms_ssim": float(value_ms[0]),
                "ms_ssim_variant": variant,
                "shape": "x".join(map(str, image.shape[1:])),
                **geometry(image, latent_shape),
            }
            if spec["dims"] == 3:
                if (source, item) not in originals:
                    originals[(source, item)] = segment(image[0], source)
                score |= structure_scores(
                    originals[(source, item)],
                    segment(recon[0], source),
                    segmenter["volume_change"],
                    segmenter.get("labels"),
                )
                score["segmenter"] = segmenter_label(segmenter)
            scores[(source, item)] = score
            if (source, item) in panel_items:
                key = f"{source}/{item}"
                panels.setdefault(f"original::{key}", _panel(image))
                panels[f"{method['id']}::{key}"] = _panel(recon)
        rows += [
            {
                "image_type": spec["image_type"],
                "seed": k,
                "source": source,
                "item_id": item,
                "method": method["id"],
                "kind": method["kind"],
                "f": reconstructor.f,
                "demo_weights": reconstructor.demo_weights,
                "demo_data": bool(spec["demo"]),
                **scores[(source, item)],
            }
            for k, source, item in draws
        ]
        log.info("%s / %s: %d items", spec["image_type"], method["id"], len(unique))
    return pd.DataFrame(rows), panels


def _panel(image: torch.Tensor) -> np.ndarray:
    """2D view for Figure 4: the image itself, or the centre slice of a volume along its last axis."""
    array = image[0].numpy()
    return array if array.ndim == 2 else array[:, :, array.shape[2] // 2]


def write_image_type_outputs(
    rows: pd.DataFrame, panels: dict[str, np.ndarray], per_item_csv: str | Path, panels_npz: str | Path
) -> None:
    """The per-item scores (CSV) and the report's panels (compressed npz) of one image type, atomically."""
    with atomic_path(per_item_csv) as temporary:
        rows.to_csv(temporary, index=False)
    with atomic_path(panels_npz) as temporary, open(temporary, "wb") as handle:
        np.savez_compressed(handle, **panels)
