"""`medlatent decode`: a latent dataset back to images, each on its item's own grid.

What is decoded: the array the model's family decodes (`LatentModel.decoded_from`): for MedVAE
2D models the unprojected posterior mean (`mean.npy`, because the stage-2 projection that made
`latent.npy` is not invertible), for VQ models the codes (`indices.npy`), otherwise
`latent.npy`, with the model named in the dataset's index. Its weights file is checked against
the sha256 the index records. The family maps the decoder output back to one channel and the
normalized intensity scale (`medlatent.models.families`); slice-wise 2D models on volumes
decode slice by slice.

Geometry, undone from each sample's meta (the shard sidecar `<shard>.meta.json`):
- 2D: the decoder output is cropped to the normalized image (the model's pad to a multiple of
  its downsampling), then to the resized image inside the letterbox (`pad_offset`,
  `resized_shape`), then resized to `original_shape` with the normalization's interpolation
  (`normalize.resize_2d`). PNG, or NIfTI with the affine diag(pixel spacing) when asked.
- 3D: cropped to the normalized volume (RAS, the configured spacing and size; `affine`), then
  resampled onto the item's acquisition grid (`original_shape`, `original_affine`: the affine
  the reader gave, NIfTI's own or the DICOM series' geometry) with the normalization's
  interpolation (`normalize.resample_3d`, MONAI `SpatialResample`; voxels outside the
  normalized field of view get the background value), and written as NIfTI with that affine,
  so it overlays the source volume voxel for voxel. `grid="normalized"` skips the resampling
  and writes the normalized grid with its affine, to compare with the normalized inputs.
  Latents larger than `latents.window / f` are decoded in overlapping windows
  (`sliding.encode_volume`, with the decoder as the windowed network), since the mid-block
  attention is quadratic in positions.

Intensities: NIfTI holds the decoder output as it is, float32 on the model's scale (the
normalization's `output_range`, [-1, 1] by default; not clipped), or with `intensity="source"`
mapped linearly back through the recorded intensity window (CT: Hounsfield units; other
modalities: the percentile window of the image). Normalization clipped everything outside that
window, so it does not come back. PNG is 16-bit gray: `output_range` to 0..65535, clipped.
"""

from __future__ import annotations

import gzip
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

from medlatent.core.atomic import atomic_path
from medlatent.core.errors import InputError
from medlatent.core.hashing import file_sha256
from medlatent.core.ids import SPLITS
from medlatent.latents.loader import check_stored, read_index, sample_array, shard_urls
from medlatent.latents.sidecar import SidecarJoin
from medlatent.latents.window import encode_volume
from medlatent.models.families import load_latent_model
from medlatent.models.families.base import LatentModel
from medlatent.normalize.run import INTERPOLATION_3D, resample_3d, resize_2d

log = logging.getLogger(__name__)

FORMATS = ("nifti", "png")
GRIDS = ("original", "normalized")
INTENSITIES = ("model", "source")
PNG_MAX = 65535


def model_weights(index: dict, index_path: Path, workdir: str | Path = ".", weights: str | Path | None = None) -> Path:
    """The weights file of the dataset's model, checked against the sha256 its index records."""
    path = Path(weights) if weights else Path(workdir) / "results" / "models" / index["model"] / "stage2.pt"
    if not path.is_file():
        raise InputError(
            path,
            f"weights of model {index['model']!r} not found",
            "pass --weights PATH, or --workdir the workflow directory holding results/models/<model>/stage2.pt",
        )
    digest = file_sha256(path)
    if digest != index["weights_sha256"]:
        raise InputError(
            path,
            f"weights sha256 {digest} differs from {index['weights_sha256']} recorded in {index_path}",
            "pass the weights the dataset was extracted with (--weights), or re-extract the dataset",
        )
    return path


class _WindowDecoder(torch.nn.Module):
    """The decoder in the shape `sliding.encode_volume` runs window by window.

    `encode_volume` applies a model's `encode_latent` to windows of a volume and pads it to a
    multiple of `downsample_factor`; on the latent grid nothing needs padding (factor 1) and
    the network is the decoder, whose output MONAI scales up by the model's factor.
    """

    downsample_factor = 1

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def encode_latent(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z)[:, None]


def _normalized_shape(meta: dict, source: str) -> list[int]:
    shape = meta.get("encoding", {}).get("normalized_shape")
    if shape is None:
        raise InputError(
            source,
            f"item {meta.get('item_id')}: its meta lacks encoding.normalized_shape",
            "re-extract the dataset with this version of MedLatent",
        )
    return shape


def decode_item(model: LatentModel, z: torch.Tensor, meta: dict, index: dict, source: str) -> np.ndarray:
    """float32 image of one sample (2D: on its original pixels; 3D: on the normalized grid).

    `z`: the stored array the model decodes (`model.decoded_from`).
    """
    device = next(model.parameters()).device
    normalized = _normalized_shape(meta, source)
    if index["dims"] == 2:
        with torch.inference_mode():
            image = model.decode(z[None].to(device))[0].float().cpu().numpy()
        image = image[: normalized[0], : normalized[1]]
        (top, left), (height, width) = meta["normalization"]["pad_offset"], meta["normalization"]["resized_shape"]
        return resize_2d(
            image[top : top + height, left : left + width],
            tuple(meta["original_shape"]),
            index["normalize"]["interpolation"],
        )
    if not model.windowed:  # slice-wise 2D models: the whole volume, slices_per_forward slices at a time
        with torch.inference_mode():
            image = model.decode(z[None].to(device)).cpu()
        return image[0, : normalized[0], : normalized[1], : normalized[2]].float().numpy()
    factor = model.downsample_factor
    window = [max(1, size // factor) for size in index["encoding"]["window"]]
    image, info = encode_volume(
        _WindowDecoder(model), z, window, index["encoding"]["overlap"], index["encoding"]["blend"]
    )  # any number of latent channels (MAISI has 4)
    log.debug("%s: decoded in %d window(s)", meta.get("item_id"), info["windows"])
    return image[0, : normalized[0], : normalized[1], : normalized[2]].float().numpy()


def original_grid(volume: np.ndarray, meta: dict, index: dict, source: str) -> tuple[np.ndarray, np.ndarray]:
    """A volume on the item's normalized grid resampled onto its acquisition grid, and that grid's affine."""
    if "original_affine" not in meta:
        raise InputError(
            source,
            f"item {meta.get('item_id')}: its meta lacks original_affine (extracted before "
            "MedLatent kept the acquisition grid)",
            "re-normalize and re-extract the source, or pass --grid normalized",
        )
    original_affine = np.asarray(meta["original_affine"], dtype=np.float64)
    background = meta["normalization"]["intensity"]["output_range"][0]
    return resample_3d(
        volume,
        np.asarray(meta["affine"], dtype=np.float64),
        original_affine,
        meta["original_shape"],
        INTERPOLATION_3D[index["normalize"]["interpolation"]],
        background,
    ), original_affine


def source_intensities(image: np.ndarray, meta: dict) -> np.ndarray:
    """Model-scale intensities mapped linearly back through the normalization's window."""
    (low, high), (out_low, out_high) = (meta["normalization"]["intensity"][key] for key in ("window", "output_range"))
    return ((image - out_low) / (out_high - out_low) * (high - low) + low).astype(np.float32)


def png_bytes(image: np.ndarray, output_range: list[float]) -> bytes:
    """16-bit gray PNG: output_range to 0..65535, clipped."""
    from PIL import Image

    low, high = output_range
    scaled = np.clip((image - low) / (high - low), 0.0, 1.0) * PNG_MAX
    buffer = io.BytesIO()
    Image.fromarray(np.round(scaled).astype(np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def pixel_affine(meta: dict) -> np.ndarray:
    """The affine of a 2D image on its original pixels: diag(pixel spacing), 1 mm if unknown."""
    spacing = meta.get("spacing") or [1.0, 1.0]
    return np.diag([float(spacing[0]), float(spacing[1]), 1.0, 1.0])


def nifti_bytes(image: np.ndarray, affine: np.ndarray) -> bytes:
    """Gzipped NIfTI-1 of a 2D or 3D float32 image with `affine` as its qform and sform."""
    import nibabel as nib

    nifti = nib.Nifti1Image(np.ascontiguousarray(image, dtype=np.float32), affine)
    nifti.set_qform(affine, code=1)
    nifti.set_sform(affine, code=1)
    return gzip.compress(nifti.to_bytes(), mtime=0)


def _samples(dataset: Path, split: str) -> Iterator[tuple[dict, dict, str]]:
    """(raw sample, its meta, tar) of one split in index order (no rank or worker split: one process decodes all)."""
    join = SidecarJoin()
    for url in shard_urls(dataset, split):
        for sample in wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples()):
            yield sample, join(sample)[1], url


def decode_dataset(
    dataset: str | Path,
    out: str | Path,
    *,
    split: str | None = None,
    fmt: str | None = None,
    intensity: str = "model",
    grid: str = "original",
    workdir: str | Path = ".",
    weights: str | Path | None = None,
    device: str = "cpu",
) -> list[Path]:
    """Decode every sample of `split` (default: all splits) to `out/<split>/<item_id>.png|.nii.gz`.

    `fmt` defaults to png for 2D and nifti for 3D (3D has no png). `grid`: 3D volumes on each
    item's acquisition grid ("original") or on the normalized grid ("normalized"); 2D images
    always come back on their original pixels. Returns the written paths.
    """
    index_path = Path(dataset) / "index.json" if Path(dataset).is_dir() else Path(dataset)
    folder, index = read_index(index_path)
    fmt = fmt or ("png" if index["dims"] == 2 else "nifti")
    if fmt not in FORMATS or intensity not in INTENSITIES or grid not in GRIDS:
        raise ValueError(f"format must be one of {FORMATS}, intensity one of {INTENSITIES} and grid one of {GRIDS}")
    if grid == "normalized" and index["dims"] == 2:
        raise InputError(
            index_path,
            "2D images are decoded onto their original pixels only",
            "drop --grid normalized (it applies to 3D datasets)",
        )
    if fmt == "png" and (index["dims"] == 3 or intensity != "model"):
        raise InputError(
            index_path,
            f"PNG holds 2D images on the model's scale, not {index['dims']}D / {intensity}",
            "use --format nifti",
        )
    if "projected" not in index["latent"]:
        raise InputError(
            index_path,
            "the index does not say whether the latents are projected",
            "re-extract the dataset with this version of MedLatent",
        )
    model = load_latent_model(model_weights(index, index_path, workdir, weights)).placed(device)
    name = model.decoded_from
    check_stored(folder, [name])
    if model.spec.get("id") != index["model"] or model.dims != index["dims"]:
        raise InputError(
            index_path,
            f"weights are for {model.dims}D model {model.spec.get('id')!r}, not "
            f"{index['dims']}D model {index['model']!r}",
            "pass this model's weights with --weights",
        )
    written = []
    for split_name in [split] if split else [s for s in SPLITS if index["splits"].get(s)]:
        for sample, meta, url in _samples(folder, split_name):
            image = decode_item(model, sample_array(sample, name), meta, index, url)
            if index["dims"] == 2:
                affine = pixel_affine(meta)
            elif grid == "original":
                image, affine = original_grid(image, meta, index, url)
            else:
                affine = np.asarray(meta["affine"], dtype=np.float64)
            if intensity == "source":
                image = source_intensities(image, meta)
            suffix, payload = (
                (".png", png_bytes(image, meta["normalization"]["intensity"]["output_range"]))
                if fmt == "png"
                else (".nii.gz", nifti_bytes(image, affine))
            )
            target = Path(out) / split_name / f"{meta['item_id']}{suffix}"
            with atomic_path(target) as temporary:
                temporary.write_bytes(payload)
            written.append(target)
    log.info("%s: decoded %d images into %s", index["name"], len(written), out)
    return written
