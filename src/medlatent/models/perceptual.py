"""VGG-LPIPS perceptual distance, for 2D images and (slice-wise) 3D volumes.

Why not MONAI's ``PerceptualLoss("vgg")``: it wraps the ``lpips`` package, which fetches the
VGG16 ImageNet weights through torchvision's downloader and cannot be pointed at local
files; its fake-3D mode also samples a fraction of slices. This is the same network in a
few lines: torchvision's VGG16 feature stack cut after relu1_2, relu2_2, relu3_3, relu4_3,
relu5_3, LPIPS's input scaling, features divided by (their L2 norm + 1e-10) as in LPIPS, squared differences weighted by
the LPIPS v0.1 linear heads (``lin{i}.model.1.weight``, the ``lpips`` package / taming
``vgg.pth`` layout), spatially averaged and summed over the five layers.
Weights load from local files: ``vgg_weights`` (torchvision ``vgg16-397923af.pth`` or any
file with the ``features.*`` keys) and ``lpips_weights``. ``{kind: demo}`` is the same
architecture at 1/8 width with seeded random VGG weights and uniform heads, labelled as a demo.
3D inputs: LPIPS on every slice along each of the three axes, each slice weighing the same
(the mean over all D + H + W slices, as the public MedVAE code computes it; ratio 1.0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from medlatent.core.errors import MedLatentError
from medlatent.core.hub import resolve
from medlatent.models.embedder import FrozenModule
from medlatent.models.ldm_layout import load_strict, read_checkpoint

#: End indices (exclusive) of the five LPIPS stages in ``vgg16().features`` and their widths.
VGG_STAGE_ENDS = (4, 9, 16, 23, 30)
VGG_CHANNELS = (64, 128, 256, 512, 512)
#: LPIPS ``ScalingLayer`` constants for inputs in [-1, 1].
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
#: The demo stand-in keeps VGG16's depth and stages at 1/8 of its widths.
DEMO_WIDTH_DIVISOR = 8
#: Four 2x max-pools precede relu5_3: smaller images have no pixel left there.
MIN_SIZE = 16


def slice_batches(volume: torch.Tensor) -> list[torch.Tensor]:
    """Every 2D slice along each spatial axis of (N, C, X, Y, Z): three (N*S, C, a, b) batches.

    Slices of one sample are contiguous, so ``values.view(N, S)`` regroups them per sample.
    """
    batches = []
    for axis in (2, 3, 4):
        moved = volume.movedim(axis, 1)  # N, S, C, a, b
        batches.append(moved.reshape(-1, *moved.shape[2:]))
    return batches


def per_sample_slice_mean(fn, volume: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
    """``fn`` applied to all slices along all three axes, averaged per sample with equal weight per slice -> (N,)."""
    n = volume.shape[0]
    groups = zip(slice_batches(volume), *(slice_batches(o) for o in others))
    return torch.cat([fn(*batch).reshape(n, -1) for batch in groups], dim=1).mean(dim=1)


def unit_features(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """LPIPS's channel normalisation x / (||x|| + eps) (not F.normalize's x / max(||x||, eps))."""
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class LinearHead(nn.Module):
    """LPIPS ``NetLinLayer`` (dropout, then a bias-free 1x1 conv to one channel)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(FrozenModule):
    """Frozen VGG16-LPIPS: ``forward(x, y)`` gives one distance per sample, shape (N,)."""

    def __init__(self, name: str, is_demo: bool, width_divisor: int = 1) -> None:
        super().__init__()
        self.name = name
        self.is_demo = is_demo
        layers = [v // width_divisor if isinstance(v, int) else v for v in cfgs["D"]]
        self.features = make_layers(layers)[: VGG_STAGE_ENDS[-1]]
        for i, channels in enumerate(VGG_CHANNELS):
            self.add_module(f"lin{i}", LinearHead(channels // width_divisor))
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

    def heads(self) -> list[LinearHead]:
        return [getattr(self, f"lin{i}") for i in range(len(VGG_CHANNELS))]

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs, start = [], 0
        for end in VGG_STAGE_ENDS:
            x = self.features[start:end](x)
            outputs.append(x)
            start = end
        return outputs

    def distance_2d(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS of (N, 1|3, H, W) images in [-1, 1]: (N,)."""
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ValueError(
                f"LPIPS-VGG needs images (or slices) of at least {MIN_SIZE} pixels per side, got {tuple(x.shape[-2:])}"
            )
        both = torch.cat([x, y]).expand(-1, 3, -1, -1)
        features = self.stages((both - self.shift) / self.scale)
        total = 0.0
        for feature, head in zip(features, self.heads()):
            fx, fy = unit_features(feature).chunk(2)
            total = total + head.model((fx - fy).pow(2)).mean(dim=(1, 2, 3))
        return total

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.ndim == 5:
            return per_sample_slice_mean(self.distance_2d, x, y)
        return self.distance_2d(x, y)


def _local_file(spec: dict[str, Any], key: str) -> Path:
    value = spec.get(key)
    path = resolve(value) if value else None  # hf:// paths: from the hub cache, or an error saying how
    if path is None or not path.is_file():
        raise MedLatentError(
            f"perceptual.{key} = {value!r} is not a local file. LPIPS needs the torchvision VGG16 "
            "ImageNet weights (vgg16-397923af.pth, `vgg_weights`) and the LPIPS v0.1 VGG heads "
            "(vgg.pth from the lpips package or taming-transformers, `lpips_weights`); set both paths "
            "in config.yaml, or use `perceptual: {kind: demo}` (random weights, labelled as a demo)."
        )
    return path


def load_perceptual(spec: dict[str, Any]) -> LPIPS:
    """The perceptual network a config ``perceptual:`` entry names (``kind: lpips_vgg | demo``)."""
    kind = spec.get("kind")
    if kind == "demo":
        seed = spec.get("seed", 0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            # random weights carry no learned features, so full width buys nothing but CPU time
            network = LPIPS(
                f"demo-lpips-vgg16/{DEMO_WIDTH_DIVISOR}(seed={seed}, random init, not pretrained)",
                is_demo=True,
                width_divisor=DEMO_WIDTH_DIVISOR,
            )
        for head in network.heads():
            nn.init.ones_(head.model[1].weight)
    elif kind == "lpips_vgg":
        vgg_path, lpips_path = _local_file(spec, "vgg_weights"), _local_file(spec, "lpips_weights")
        network = LPIPS(f"lpips-vgg16({lpips_path.name})", is_demo=False)
        vgg = read_checkpoint(vgg_path)
        vgg = {k.removeprefix("features."): v for k, v in vgg.items() if not k.startswith("classifier.")}
        load_strict(network.features, vgg, vgg_path)
        heads = {k: v for k, v in read_checkpoint(lpips_path).items() if k.startswith("lin")}
        for i, head in enumerate(network.heads()):
            load_strict(
                head, {k.removeprefix(f"lin{i}."): v for k, v in heads.items() if k.startswith(f"lin{i}.")}, lpips_path
            )
    else:
        raise MedLatentError(
            f"unknown perceptual kind {kind!r}: use `perceptual: {{kind: lpips_vgg}}` or `{{kind: demo}}`"
        )
    network.freeze()
    return network
