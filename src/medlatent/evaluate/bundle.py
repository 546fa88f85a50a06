"""Segmentation with a MONAI bundle's own `configs/inference.json`, on volumes held in memory.

The bundle's config is parsed with MONAI's ConfigParser and its own objects are used:
`network_def` (weights from the file its CheckpointLoader handler names), `preprocessing`,
`inferer` and `postprocessing`, in the order its SupervisedEvaluator applies them (inference
under no_grad, CUDA autocast where `evaluator.amp` says so). Two transforms touch files and are
left out: LoadImaged (the volume arrives as a MetaTensor with its affine instead) and SaveImaged
(the label map is returned). Invertd stays, so the labels come back on the volume's grid.

A normalized volume is first mapped back to the intensities the bundle was trained on (the
per-source linear map of `config.slices.segmenter_slice`: CT to HU through the normalization
window, MRI to [0, 1]) and given the RAS affine of the normalization spacing.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

from medlatent.core.errors import InputError
from medlatent.core.hub import download_command, is_hub_path, resolve, split_hub_path
from medlatent.evaluate import bundle_memory

log = logging.getLogger(__name__)

#: Transforms of a bundle's pre/postprocessing that read or write files.
FILE_ONLY = ("LoadImaged", "SaveImaged")
CONFIG = "configs/inference.json"


def bundle_folder(bundle: str) -> Path:
    """The bundle's folder: a local path, or its hub-cache snapshot; stops when the config is not there."""
    folder = resolve(bundle)
    if not (folder / CONFIG).is_file():
        fix = (
            f"run `{download_command(split_hub_path(bundle)[0])}` where there is internet; copy the hub cache here"
            if is_hub_path(bundle)
            else "point evaluation.recon.segmenter.<modality>.bundle at a MONAI bundle folder"
        )
        raise InputError(str(folder / CONFIG), "no MONAI bundle inference config", fix)
    return folder


def to_bundle_intensities(volume: torch.Tensor, source: dict) -> torch.Tensor:
    """Normalized intensities (output_range) mapped linearly onto the bundle's range (CT: the HU window)."""
    (lo_out, hi_out), (lo, hi) = source["output_range"], source["bundle_range"]
    return (volume - lo_out) / (hi_out - lo_out) * (hi - lo) + lo


class BundleSegmenter:
    """segment(normalized volume, source id) -> label map on the volume's grid, by a MONAI bundle."""

    def __init__(self, spec: dict, device: torch.device) -> None:
        from monai.bundle import ConfigParser  # MONAI loads every submodule at import: only bundle jobs pay
        from monai.inferers import SlidingWindowInferer

        folder = bundle_folder(spec["bundle"])
        # bundles whose network ships as code (`scripts.networks...`, e.g. UNesT) import it from their
        # root, which `python -m monai.bundle run` has on the path as its working directory
        sys.path.insert(0, str(folder))
        parser = ConfigParser()
        parser.read_config(str(folder / CONFIG))
        parser["bundle_root"] = str(folder)
        parser["device"] = f"$torch.device('{device}')"
        if parser.get("inferer#device") is not None:
            parser["inferer#device"] = "@device"
        if "sw_batch_size" in spec:
            parser["inferer#sw_batch_size"] = spec["sw_batch_size"]
        self.network = parser.get_parsed_content("network_def").to(device).eval()
        self.network.load_state_dict(torch.load(self._weights(parser), map_location=device, weights_only=True))
        self.inferer = parser.get_parsed_content("inferer")
        self.preprocessing = self._in_memory(parser.get_parsed_content("preprocessing"))
        self.postprocessing = self._in_memory(parser.get_parsed_content("postprocessing"))
        self.amp = bool(parser.get("evaluator#amp", False)) and device.type == "cuda"
        self.spec, self.sources, self.device = spec, spec["sources"], device
        self.budgeted = "sw_batch_size" not in spec and isinstance(self.inferer, SlidingWindowInferer)
        #: sw_batch_size chosen per preprocessed volume shape (channels first)
        self.sw_batch_sizes: dict[tuple[int, ...], int] = {}

    @staticmethod
    def _weights(parser) -> Path:
        """The file the bundle's CheckpointLoader loads (ignite's handler: only its path is read).

        Bundles place it in two ways: as an evaluator handler (wholeBody_ct_segmentation up to
        0.2.1), or as a top-level item that `initialize` calls on the evaluator (0.2.2 on).
        """
        handlers = [f"handlers#{index}" for index in range(len(parser.get("handlers", [])))]
        for key in handlers + list(parser.get()):
            item = parser.get(key)
            if isinstance(item, dict) and str(item.get("_target_", "")).endswith("CheckpointLoader"):
                path = Path(parser.get_parsed_content(f"{key}#load_path"))
                if not path.is_file():
                    raise InputError(str(path), "bundle weights missing", "download the whole bundle")
                return path
        raise InputError(parser["bundle_root"], "the inference config loads no checkpoint", "use a trained bundle")

    @staticmethod
    def _in_memory(compose):
        """The bundle's Compose without its file transforms; the same transform objects (Invertd finds them)."""
        from monai.transforms import Compose

        return Compose([t for t in compose.transforms if type(t).__name__ not in FILE_ONLY])

    def __call__(self, volume: torch.Tensor, source: str) -> torch.Tensor:
        from monai.data import MetaTensor, decollate_batch, list_data_collate

        grid = self.sources[source]
        affine = torch.diag(torch.tensor([*grid["spacing"], 1.0], dtype=torch.float64))
        image = MetaTensor(
            to_bundle_intensities(volume.float(), grid),
            affine=affine,
            meta={"original_channel_dim": "no_channel", "filename_or_obj": f"{source} (in memory)"},
        )
        batch = list_data_collate([self.preprocessing({"image": image})])
        with torch.no_grad(), torch.autocast("cuda", enabled=self.amp):
            if self.budgeted:
                self.inferer.sw_batch_size = self.sw_batch_size(tuple(batch["image"].shape[1:]))
            batch["pred"] = self.inferer(batch["image"].to(self.device), self.network)
        labels = self.postprocessing(decollate_batch(batch)[0])["pred"]
        return torch.as_tensor(labels)[0].round().to(torch.int16).cpu()

    def sw_batch_size(self, shape: tuple[int, ...]) -> int:
        """Windows per forward for a preprocessed volume of `shape` (channels first) within the budget.

        Call under the inference's no_grad and autocast: the probe forwards measure what they do.
        """
        from monai.utils import fall_back_tuple

        if shape not in self.sw_batch_sizes:
            channels, spatial = shape[0], list(shape[1:])
            roi = list(fall_back_tuple(self.inferer.roi_size, spatial))
            fixed, per_window, classes = bundle_memory.window_costs(self.network, [channels, *roi], self.device)
            stitched = bundle_memory.stitched_bytes(classes, channels, spatial, roi)
            windows = bundle_memory.count_windows(spatial, roi, self.inferer.overlap)
            key = f"evaluation.recon.segmenter.{self.spec['modality']}.max_memory_gb"
            if "max_memory_gb" in self.spec:
                budget, whence = int(self.spec["max_memory_gb"] * 2**30), key
            else:
                budget = bundle_memory.default_budget_bytes(self.device, self.spec["mem_mb"])
                whence = "GPU memory free" if self.device.type == "cuda" else "evaluation.recon.mem_mb less resident"
            self.sw_batch_sizes[shape] = bundle_memory.fitting_windows(
                stitched,
                fixed,
                per_window,
                budget,
                windows,
                f"raise {key} (unset, it is what the device has left: on CPU evaluation.recon.mem_mb less the "
                "job's resident memory, on a GPU its free memory)",
            )
            log.info(
                "%s on %s, volume %s (%d windows of %s, %d classes): %s stitched output, %s fixed, %s per window; "
                "budget %s (%s): sw_batch_size %d",
                self.spec["bundle"],
                self.device,
                "x".join(map(str, spatial)),
                windows,
                "x".join(map(str, roi)),
                classes,
                *map(bundle_memory.megabytes, (stitched, fixed, per_window, budget)),
                whence,
                self.sw_batch_sizes[shape],
            )
        return self.sw_batch_sizes[shape]
