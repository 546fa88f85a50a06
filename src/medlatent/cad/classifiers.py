"""CAD classifiers (Table 1): timm HRNet for 2D inputs, MONAI SEResNet for 3D inputs.

Every method of a task feeds the same classifier; only the input size differs. ImageNet
weights for HRNet load through timm's own path from a local file (`pretrained_path`), never
from the network; without one the network is randomly initialised and the metrics say so.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from medlatent.core.errors import ConfigError, InputError

#: The 2D classifier sees latents averaged over channels, 3D latents have C=1: one input channel.
CAD_IN_CHANNELS = 1
#: HRNet fuses branches at strides 4 to 32: its input sides must be multiples of 32.
HRNET_STRIDE = 32
#: SEResNet's stem (stride-2 conv, then a 3x3x3 max pool without padding) needs at least 3 voxels per axis.
SERESNET_MIN_SIZE = 4
#: MONAI classes by config name (MONAI is imported only by 3D jobs: it loads every submodule at import).
SERESNETS = {"seresnet50": "SEResNet50", "seresnet101": "SEResNet101", "seresnet152": "SEResNet152"}


class PadSpatial(nn.Module):
    """Centre pads every spatial side with edge values up to a multiple and at least a minimum size:
    small latents must pass the classifier's strides (inputs that already fit are untouched)."""

    def __init__(self, multiple: int = 1, minimum: int = 1) -> None:
        super().__init__()
        self.multiple, self.minimum = multiple, minimum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad: list[int] = []
        for size in reversed(x.shape[2:]):
            extra = max(self.minimum - size, 0)
            extra += -(size + extra) % self.multiple
            pad += [extra // 2, extra - extra // 2]
        return F.pad(x, pad, mode="replicate") if any(pad) else x


def num_outputs(dims: int, classes: int) -> int:
    """3D binary tasks use one logit with BCE (as published); everything else one logit per class."""
    return 1 if dims == 3 and classes == 2 else classes


def build_classifier_2d(spec: dict, outputs: int) -> nn.Module:
    """timm model `spec.name` with one input channel; ImageNet weights only from a local file."""
    kwargs = {"in_chans": CAD_IN_CHANNELS, "num_classes": outputs}
    if spec.get("pretrained_path"):
        path = Path(spec["pretrained_path"])
        if not path.is_file():
            raise InputError(
                path,
                "pretrained classifier weights not found",
                "download them once (e.g. timm's hrnet_w64 ImageNet weights) and point "
                "evaluation.cad.classifier_2d.pretrained_path at the file, or set it to null",
            )
        network = timm.create_model(spec["name"], pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)
    else:
        network = timm.create_model(spec["name"], pretrained=False, **kwargs)
    stride = HRNET_STRIDE if spec["name"].startswith("hrnet") else 1
    return nn.Sequential(PadSpatial(multiple=stride), network)


def build_classifier_3d(spec: dict, outputs: int) -> nn.Module:
    """MONAI SEResNet (50/101/152) in 3D; `layers` shrinks it (demo)."""
    from monai.networks import nets

    if spec["name"] not in SERESNETS:
        raise ConfigError(f"evaluation.cad.classifier_3d.name={spec['name']!r}; choose one of {sorted(SERESNETS)}")
    kwargs = {"spatial_dims": 3, "in_channels": CAD_IN_CHANNELS, "num_classes": outputs}
    if spec.get("layers"):
        kwargs["layers"] = tuple(spec["layers"])
    return nn.Sequential(PadSpatial(minimum=SERESNET_MIN_SIZE), getattr(nets, SERESNETS[spec["name"]])(**kwargs))


def build_classifier(dims: int, classes: int, spec: dict) -> nn.Module:
    """The task's classifier: 2D timm model or 3D SEResNet with the task's number of outputs."""
    outputs = num_outputs(dims, classes)
    return build_classifier_2d(spec, outputs) if dims == 2 else build_classifier_3d(spec, outputs)
