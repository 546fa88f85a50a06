"""SegSim (MediBench pillar 2): do segmentations of the original and the reconstruction agree?

MediBench segments both volumes with SynthSeg and scores voxel-wise label agreement. SynthSeg
is not part of this workflow; the configured segmenter is `threshold`, which labels intensity
bands of the normalized volume (e.g. CT air / fat / soft tissue / bone). It is a stand-in for
an anatomical segmenter and every table names it as such.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medlatent.core.errors import ConfigError


def threshold_segment(volume: torch.Tensor, thresholds: list[float]) -> torch.Tensor:
    """Label k for voxels in the k-th intensity band: 0 below the first threshold, len(thresholds) above the last."""
    return torch.bucketize(
        volume.contiguous(), torch.tensor(sorted(thresholds), dtype=volume.dtype, device=volume.device)
    )


def segsim_dice(original: torch.Tensor, reconstruction: torch.Tensor, segmenter: dict) -> float:
    """Mean Dice (MONAI compute_dice) over the foreground labels present in either segmentation;
    1.0 when both are all background (they agree everywhere)."""
    from monai.metrics import compute_dice  # MONAI loads every submodule at import: only 3D jobs pay for it

    if segmenter.get("kind") != "threshold" or not segmenter.get("thresholds"):
        raise ConfigError(
            f"evaluation.recon.segmenter={segmenter!r}: only kind 'threshold' with thresholds for the "
            "modality is implemented"
        )
    classes = len(segmenter["thresholds"]) + 1
    labels = [
        F.one_hot(threshold_segment(v, segmenter["thresholds"]), classes).movedim(-1, 0)[None].float()
        for v in (reconstruction, original)
    ]
    present = (labels[0] + labels[1]).flatten(2).amax(-1)[0, 1:] > 0
    if not present.any():
        return 1.0
    dice = compute_dice(labels[0], labels[1], include_background=False, ignore_empty=False)[0]
    return float(dice[present].mean())
