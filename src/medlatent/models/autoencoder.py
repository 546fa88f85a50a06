"""The latent-diffusion (CompVis LDM) KL autoencoder, once, for 2D and 3D.

Why not MONAI's ``AutoencoderKL``: its layout differs from LDM's (one fewer decoder res block
per level, no SiLU before the final convs, separate mean/log-variance heads, Linear attention
projections), so LDM kl-f4/kl-f8, the Stable Diffusion VAE and the released MedVAE weights
would need a subclass plus a key converter. This module instead reproduces LDM's module tree,
so ``state_dict()`` names and shapes are exactly the LDM ones and those checkpoints load with
``load_state_dict(strict=True)``. Plain torch is used for every block; the numerics are LDM's:
GroupNorm(eps 1e-6, affine), SiLU, asymmetric (0, 1) padding before a stride-2 k3 conv,
nearest x2 upsampling then a k3 conv, one single-head self-attention in the mid block over
all spatial positions (``scaled_dot_product_attention``, query-chunked once the score matrix
would pass ``ATTENTION_SCORE_BYTES``: a 1024x1024 image gives 65,536 mid-block tokens, a 17 GB
matrix), and a double-z head whose log-variance is
clamped to [-30, 20]. ``spatial_dims`` picks Conv2d or Conv3d; nothing else changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from medlatent.normalize import BACKGROUND

LOGVAR_RANGE = (-30.0, 20.0)
# Largest attention score matrix (batch x queries x keys) computed at once; above it queries go in chunks.
ATTENTION_SCORE_BYTES = 256 * 2**20


def conv_nd(spatial_dims: int, *args, **kwargs) -> nn.Module:
    """Conv2d or Conv3d with the same arguments."""
    return (nn.Conv2d, nn.Conv3d)[spatial_dims - 2](*args, **kwargs)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """LDM's ``Normalize``: GroupNorm with eps 1e-6 and affine parameters."""
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """norm -> SiLU -> conv3 -> norm -> SiLU -> conv3, plus a 1x1 shortcut when widths differ."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = conv_nd(spatial_dims, in_channels, out_channels, 3, 1, 1)
        self.norm2 = group_norm(out_channels, groups)
        self.conv2 = conv_nd(spatial_dims, out_channels, out_channels, 3, 1, 1)
        if in_channels != out_channels:
            self.nin_shortcut = conv_nd(spatial_dims, in_channels, out_channels, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over every spatial position; q, k, v, proj_out are 1x1 convs."""

    def __init__(self, spatial_dims: int, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.q, self.k, self.v, self.proj_out = (conv_nd(spatial_dims, channels, channels, 1, 1, 0) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        b, c, *spatial = h.shape
        q, k, v = (layer(h).reshape(b, 1, c, -1).transpose(-1, -2) for layer in (self.q, self.k, self.v))
        h = chunked_attention(q, k, v)  # softmax(q k^T / sqrt(c)) v, as LDM
        h = h.transpose(-1, -2).reshape(b, c, *spatial)
        return x + self.proj_out(h)


def chunked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, max_score_bytes: int | None = None
) -> torch.Tensor:
    """``scaled_dot_product_attention(q, k, v)`` with queries in chunks whose score matrix fits ``max_score_bytes``.

    The fused kernel runs in one call while the whole matrix fits (small inputs, the demo, GPUs);
    each query row's softmax only needs its own scores, so chunking queries changes nothing else.
    ``max_score_bytes`` defaults to ``ATTENTION_SCORE_BYTES`` (read at call time).
    """
    bound = ATTENTION_SCORE_BYTES if max_score_bytes is None else max_score_bytes
    *batch, queries, _ = q.shape
    bytes_per_query_row = math.prod(batch) * k.shape[-2] * q.element_size()
    rows = max(1, bound // bytes_per_query_row)
    if rows >= queries:
        return F.scaled_dot_product_attention(q, k, v)
    return torch.cat([F.scaled_dot_product_attention(chunk, k, v) for chunk in q.split(rows, dim=-2)], dim=-2)


class Downsample(nn.Module):
    """Pad (0, 1) on every spatial axis, then a k3 stride-2 conv without padding (LDM)."""

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        self.conv = conv_nd(spatial_dims, channels, channels, 3, 2, 0)
        self.pad = (0, 1) * spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad, mode="constant", value=0.0))


class Upsample(nn.Module):
    """Nearest-neighbour x2 on every spatial axis, then a k3 conv."""

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        self.conv = conv_nd(spatial_dims, channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    """res block -> self-attention -> res block at the lowest resolution."""

    def __init__(self, spatial_dims: int, channels: int, groups: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(spatial_dims, channels, channels, groups)
        self.attn_1 = AttnBlock(spatial_dims, channels, groups)
        self.block_2 = ResnetBlock(spatial_dims, channels, channels, groups)


class Level(nn.Module):
    """One resolution level: ``block`` (res blocks) and an optional resampler."""

    def __init__(self, blocks: list[ResnetBlock], resample_name: str | None, resampler: nn.Module | None) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        if resample_name is not None:
            self.add_module(resample_name, resampler)


class _Trunk(nn.Module):
    """What encoder and decoder share: optional activation checkpointing of their blocks."""

    gradient_checkpointing = False

    def run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(module, x, use_reentrant=False)
        return module(x)

    def mid_forward(self, h: torch.Tensor) -> torch.Tensor:
        for layer in (self.mid.block_1, self.mid.attn_1, self.mid.block_2):
            h = self.run(layer, h)
        return h


class Encoder(_Trunk):
    """LDM ``Encoder`` with ``attn_resolutions=[]`` (attention only in the mid block)."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        z_channels: int,
        groups: int,
    ) -> None:
        super().__init__()
        self.conv_in = conv_nd(spatial_dims, in_channels, ch, 3, 1, 1)
        widths = [ch * m for m in ch_mult]
        block_in = ch
        self.down = nn.ModuleList()
        for level, block_out in enumerate(widths):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(spatial_dims, block_in, block_out, groups))
                block_in = block_out
            last = level == len(widths) - 1
            self.down.append(
                Level(blocks, None if last else "downsample", None if last else Downsample(spatial_dims, block_in))
            )
        self.mid = MidBlock(spatial_dims, block_in, groups)
        self.norm_out = group_norm(block_in, groups)
        self.conv_out = conv_nd(spatial_dims, block_in, 2 * z_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = self.run(block, h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid_forward(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(_Trunk):
    """LDM ``Decoder``: num_res_blocks + 1 res blocks per level; ``up[0]`` is the finest level."""

    def __init__(
        self,
        spatial_dims: int,
        out_channels: int,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        z_channels: int,
        groups: int,
    ) -> None:
        super().__init__()
        block_in = ch * ch_mult[-1]
        self.conv_in = conv_nd(spatial_dims, z_channels, block_in, 3, 1, 1)
        self.mid = MidBlock(spatial_dims, block_in, groups)
        levels: list[Level] = []
        for level in reversed(range(len(ch_mult))):
            block_out = ch * ch_mult[level]
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(spatial_dims, block_in, block_out, groups))
                block_in = block_out
            levels.insert(
                0, Level(blocks, "upsample" if level else None, Upsample(spatial_dims, block_in) if level else None)
            )
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(block_in, groups)
        self.conv_out = conv_nd(spatial_dims, block_in, out_channels, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid_forward(self.conv_in(z))
        for level in reversed(self.up):
            for block in level.block:
                h = self.run(block, h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class DiagonalGaussian:
    """The posterior N(mean, exp(logvar)) from the double-z moments (LDM's clamp on logvar)."""

    def __init__(self, moments: torch.Tensor) -> None:
        self.mean, logvar = torch.chunk(moments, 2, dim=1)
        self.logvar = logvar.clamp(*LOGVAR_RANGE)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL to N(0, I), summed over all non-batch axes: one value per sample."""
        dims = tuple(range(1, self.mean.ndim))
        return 0.5 * torch.sum(self.mean.pow(2) + self.var - 1.0 - self.logvar, dim=dims)


@dataclass(frozen=True)
class Padding:
    """How ``encode_padded`` grew the input: crop decoder outputs back to ``spatial_shape``."""

    spatial_shape: tuple[int, ...]
    padded_shape: tuple[int, ...]

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """Cut the trailing padding off a full-resolution tensor (never resizes)."""
        return x[(..., *(slice(0, n) for n in self.spatial_shape))]


def pad_to_multiple(x: torch.Tensor, multiple: int, value: float = BACKGROUND) -> tuple[torch.Tensor, Padding]:
    """Pad the end of every spatial axis up to a multiple of ``multiple`` with ``value``."""
    spatial = tuple(x.shape[2:])
    padded = tuple(math.ceil(n / multiple) * multiple for n in spatial)
    pad: list[int] = []
    for n, target in reversed(list(zip(spatial, padded))):
        pad += [0, target - n]
    if any(pad):
        x = F.pad(x, pad, mode="constant", value=value)
    return x, Padding(spatial, padded)


class AutoencoderKL(nn.Module):
    """LDM AutoencoderKL (encoder, decoder, quant_conv, post_quant_conv); 2D or 3D.

    ``latent_channels`` is both LDM's ``z_channels`` and ``embed_dim`` (equal in every LDM
    KL model and in MedVAE). ``config`` keeps the constructor arguments so inflation and
    checkpoints can rebuild the same network.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int | None = None,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        latent_channels: int = 1,
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        out_channels = in_channels if out_channels is None else out_channels
        self.config = {
            "spatial_dims": spatial_dims,
            "in_channels": in_channels,
            "out_channels": out_channels,
            "ch": ch,
            "ch_mult": list(ch_mult),
            "num_res_blocks": num_res_blocks,
            "latent_channels": latent_channels,
            "norm_groups": norm_groups,
        }
        self.spatial_dims = spatial_dims
        self.latent_channels = latent_channels
        self.encoder = Encoder(spatial_dims, in_channels, ch, ch_mult, num_res_blocks, latent_channels, norm_groups)
        self.decoder = Decoder(spatial_dims, out_channels, ch, ch_mult, num_res_blocks, latent_channels, norm_groups)
        self.quant_conv = conv_nd(spatial_dims, 2 * latent_channels, 2 * latent_channels, 1)
        self.post_quant_conv = conv_nd(spatial_dims, latent_channels, latent_channels, 1)

    @property
    def downsample_factor(self) -> int:
        """Size reduction per spatial axis: 2 ** (len(ch_mult) - 1)."""
        return 2 ** (len(self.config["ch_mult"]) - 1)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute res/attention block activations in backward (memory for 3D patches)."""
        self.encoder.gradient_checkpointing = enabled
        self.decoder.gradient_checkpointing = enabled

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """Posterior over the latent; spatial sizes must be multiples of ``downsample_factor``."""
        bad = [n for n in x.shape[2:] if n % self.downsample_factor]
        if bad or x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"expected a (batch, channel, {self.spatial_dims} spatial axes) tensor with sizes divisible by "
                f"{self.downsample_factor}, got shape {tuple(x.shape)}; use encode_padded for other sizes"
            )
        return DiagonalGaussian(self.quant_conv(self.encoder(x)))

    def encode_padded(self, x: torch.Tensor) -> tuple[DiagonalGaussian, Padding]:
        """Encode any size: pad with the background value (-1) and say how to crop back."""
        padded, padding = pad_to_multiple(x, self.downsample_factor)
        return self.encode(padded), padding

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))

    def forward(
        self, x: torch.Tensor, sample_posterior: bool = True, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, DiagonalGaussian]:
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z), posterior
