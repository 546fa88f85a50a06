"""SegSim and SegQC (MediBench pillar 2): do segmentations of the original and the reconstruction agree?

MediBench segments both volumes with an anatomical segmenter (SynthSeg) and scores the
agreement. Here the segmenter of a modality is a MONAI bundle (`evaluate.bundle`) or the
`threshold` stand-in, which labels intensity bands of the normalized volume (e.g. CT air / fat /
soft tissue / bone) and is named as a stand-in in every table.

Scores of one volume, over the structures (foreground labels) present in either segmentation:
per-structure Dice (MONAI compute_dice; a structure missing from one segmentation scores 0)
and volume ratio (reconstruction / original); SegSim is their macro mean Dice (1.0 when both
segmentations are all background); SegQC counts the structures whose volume changed by more
than the configured fraction.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import torch

#: Structures scored per compute_dice call: one-hot masks of all 105 TotalSegmentator labels of a
#: 160^3 crop would take 1.7 GB.
DICE_CHUNK = 8


def threshold_segment(volume: torch.Tensor, thresholds: list[float]) -> torch.Tensor:
    """Label k for voxels in the k-th intensity band: 0 below the first threshold, len(thresholds) above the last."""
    return torch.bucketize(
        volume.contiguous(), torch.tensor(sorted(thresholds), dtype=volume.dtype, device=volume.device)
    )


def structure_dice(original: torch.Tensor, reconstruction: torch.Tensor, labels: list[int]) -> list[float]:
    """Dice (MONAI compute_dice) of each label between two label maps; 0 where only one has it."""
    from monai.metrics import compute_dice  # MONAI loads every submodule at import: only 3D jobs pay for it

    dice = []
    for start in range(0, len(labels), DICE_CHUNK):
        chunk = labels[start : start + DICE_CHUNK]
        predicted, reference = (
            torch.stack([segmentation == label for label in chunk])[None].float()
            for segmentation in (reconstruction, original)
        )
        dice += compute_dice(predicted, reference, include_background=True, ignore_empty=False)[0].tolist()
    return dice


def structure_scores(
    original: torch.Tensor, reconstruction: torch.Tensor, volume_change: float, labels: list[int] | None = None
) -> dict:
    """SegSim, SegQC and the per-structure Dice and volume ratio (JSON) of two label maps of one volume.

    `labels` restricts the structures scored; a volume ratio is null where the original lacks the structure.
    """
    present = sorted((set(original.unique().tolist()) | set(reconstruction.unique().tolist())) - {0})
    if labels is not None:
        present = [label for label in present if label in labels]
    dice = structure_dice(original, reconstruction, present)
    structures, changed = {}, 0
    for label, value in zip(present, dice):
        before, after = int((original == label).sum()), int((reconstruction == label).sum())
        ratio = after / before if before else None
        changed += ratio is None or abs(ratio - 1) > volume_change
        structures[str(label)] = {"dice": value, "volume_ratio": ratio}
    return {
        "segsim_dice": sum(dice) / len(dice) if dice else 1.0,
        "segqc_changed": changed,
        "segsim_structures": json.dumps(structures),
    }


def make_segmenter(spec: dict, device: torch.device) -> Callable[[torch.Tensor, str], torch.Tensor]:
    """segment(normalized volume, source id) -> label map on the volume's grid, for the configured kind."""
    if spec["kind"] == "threshold":
        return lambda volume, source: threshold_segment(volume, spec["thresholds"])
    from medlatent.evaluate.bundle import BundleSegmenter

    return BundleSegmenter(spec, device)
