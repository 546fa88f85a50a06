"""The PatchGAN discriminator, and how it scores 3D volumes as the public MedVAE code does.

The network is MONAI's ``PatchDiscriminator`` (64 channels, 3 layers, BatchNorm: the LDM
``NLayerDiscriminator``). It is 2D. The public code scores a 3D volume by calling it on every
slice along depth, height and width, ONE SLICE AT A TIME, and averaging the logit maps of all
those slices element-wise (``discriminator_2d_nets_to_3d``); the hinge and the generator term
are then taken on that one averaged map. Calling it slice by slice has two consequences that
are reproduced here:
  - in train mode each BatchNorm normalises with the statistics of one slice position, taken
    over the volumes of the batch, not over all slices;
  - its running statistics take one momentum update per slice, in the order depth, height,
    width (3 x S updates per scored volume batch).
Instead of 3 x S calls, all slices go through the network as one batch and ``SliceBatchNorm2d``
computes per-slice statistics and the closed form of the sequential running-statistics updates.

The element-wise average needs logit maps of one shape, so the adversarial term needs cubic
patches (the public code fails on others); the configuration refuses non-cubic 3D patches
unless ``disc_weight`` is 0 (``medlatent.config.slices``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from monai.networks.nets import PatchDiscriminator
from torch import nn


class SliceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d over a batch of ``slices`` consecutive slices per volume, statistics per slice.

    Rows ``n * slices + k`` hold slice ``k`` of volume ``n``. In train mode slice ``k`` is
    normalised with the mean and variance over (volumes, height, width) of slice ``k`` alone,
    and the running statistics end where ``slices`` sequential BatchNorm calls, slice 0 first,
    would leave them:  r_S = (1 - m)^S r_0 + sum_k m (1 - m)^(S - 1 - k) x_k.
    With ``slices == 1`` (2D images) it is an ordinary BatchNorm2d.
    """

    slices = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.slices == 1:
            return super().forward(x)
        slices, channels = self.slices, x.shape[1]
        # (N*S, C, h, w) -> (N, S*C, h, w): channel k*C + c is channel c of slice k, a free view
        grouped = x.reshape(x.shape[0] // slices, slices * channels, *x.shape[2:])
        means = variances = None
        if self.track_running_stats:  # momentum 1: these receive each slice's batch mean and unbiased variance
            like = {"dtype": self.running_mean.dtype, "device": x.device}
            means, variances = torch.zeros(slices * channels, **like), torch.ones(slices * channels, **like)
        out = F.batch_norm(
            grouped,
            means,
            variances,
            None if self.weight is None else self.weight.repeat(slices),
            None if self.bias is None else self.bias.repeat(slices),
            training=True,
            momentum=1.0,
            eps=self.eps,
        )
        if means is not None:
            self._update_running_stats(means.view(slices, channels), variances.view(slices, channels))
        return out.view_as(x)

    @torch.no_grad()
    def _update_running_stats(self, means: torch.Tensor, variances: torch.Tensor) -> None:
        if self.momentum is None:
            raise ValueError("SliceBatchNorm2d reproduces momentum updates; cumulative averaging is not supported")
        momentum, slices = self.momentum, means.shape[0]
        powers = torch.arange(slices - 1, -1, -1, dtype=torch.float64, device=means.device)
        weights = (momentum * (1 - momentum) ** powers).to(means.dtype)[:, None]
        kept = (1 - momentum) ** slices
        self.running_mean.mul_(kept).add_((weights * means).sum(0).to(self.running_mean.dtype))
        self.running_var.mul_(kept).add_((weights * variances).sum(0).to(self.running_var.dtype))
        self.num_batches_tracked.add_(slices)


class Discriminator(PatchDiscriminator):
    """The LDM PatchGAN (MONAI ``PatchDiscriminator``, 2D, BatchNorm) with per-slice BatchNorm for 3D.

    The state-dict layout is MONAI's; ``logits`` scores 2D images or 3D volumes.
    """

    def __init__(self, channels: int = 64, layers: int = 3, in_channels: int = 1) -> None:
        super().__init__(spatial_dims=2, channels=channels, in_channels=in_channels, num_layers_d=layers, norm="BATCH")
        for name, module in list(self.named_modules()):
            if type(module) is nn.BatchNorm2d:
                parent, _, child = name.rpartition(".")
                per_slice = SliceBatchNorm2d(
                    module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
                )
                per_slice.load_state_dict(module.state_dict())
                setattr(self.get_submodule(parent), child, per_slice)
        # k4 convs: `layers` halvings, then two stride-1 convs that each lose one pixel
        self.min_size = 3 * 2**layers

    @contextmanager
    def _slices_per_volume(self, slices: int) -> Iterator[None]:
        norms = [m for m in self.modules() if isinstance(m, SliceBatchNorm2d)]
        for norm in norms:
            norm.slices = slices
        try:
            yield
        finally:
            for norm in norms:
                norm.slices = 1

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Patch logits of (N, C, H, W) images, or of (N, C, S, S, S) volumes averaged over all 3 x S slices.

        A volume's slices along depth, then height, then width are scored as if one slice at a
        time (per-slice BatchNorm batches); the result is the element-wise mean of their maps.
        """
        if min(images.shape[2:]) < self.min_size:
            raise ValueError(
                f"the PatchGAN discriminator needs images or patches of at least {self.min_size} "
                f"pixels per side, got {tuple(images.shape[2:])}"
            )
        if images.ndim == 4:
            return self(images)[-1]
        if len(set(images.shape[2:])) != 1:
            raise ValueError(
                f"the 3D adversarial term averages the logit maps of slices along all three axes, so it "
                f"needs cubic patches; got {tuple(images.shape[2:])}"
            )
        slices = torch.cat([images.movedim(axis, 1) for axis in (2, 3, 4)], dim=1)  # N, 3S, C, S, S
        volumes, count = slices.shape[:2]
        with self._slices_per_volume(count):
            maps = self(slices.flatten(0, 1))[-1]
        return maps.unflatten(0, (volumes, count)).mean(dim=1)
