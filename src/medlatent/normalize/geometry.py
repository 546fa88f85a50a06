"""The 3D geometry of normalization in one torch pass: reorient to RAS, resample, centre pad/crop.

The output grid is the one MONAI's `Orientation(axcodes="RAS")` + `Spacing(pixdim)` +
`ResizeWithPadOrCrop(size)` produce (same shape, same affine, same interpolation: MONAI's
`zoom_affine` and `compute_shape_offset` with `scale_extent=False`; `grid_sample` semantics
with border padding, where voxel i of the output samples the input at the continuous voxel
index `xform @ i`). The work differs: reorientation is a free permuted view with the flips
folded into the sampling positions, only the voxels that survive the crop are sampled, and
when the input and output grids share their axes the trilinear resampling is three 1D linear
passes instead of a sampling grid. That is every grid with orthogonal axes, oblique ones
included (Spacing keeps the direction cosines); sheared grids (gantry-tilted CT series) take
`grid_sample`, slab by slab so that the grid stays small.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

#: Axis labels of world space; with these "RAS" means the NIfTI/nibabel convention.
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
#: MONAI's tolerance below which two affines count as the same grid (no resampling).
AFFINE_TOL = 1e-3
#: Off-diagonal size below which the voxel-to-voxel map counts as axis-aligned.
AXIS_ALIGNED_TOL = 1e-9
#: Voxels per block of the separable passes (a few MB: the neighbours of a block stay in cache).
BLOCK_ELEMENTS = 2**20


@dataclass(frozen=True)
class RasGrid:
    """Where `normalize_3d` samples its input.

    `axes` and `flips` reorient the input to RAS (output axis a is input axis axes[a], flipped
    where flips[a]); `input_affine` is the input's affine with its columns in that order
    (unflipped); `resampled_affine` and `resampled_shape` are the grid at the target spacing
    before pad/crop; `affine` the final grid's; `window` the voxel range of the resampled grid
    kept in the output and `pad` the (before, after) background voxels around it.
    `resamples` is False when the target grid is the reoriented input grid (MONAI then copies).
    """

    axes: tuple[int, ...]
    flips: tuple[bool, ...]
    input_affine: np.ndarray
    resampled_affine: np.ndarray
    resampled_shape: tuple[int, ...]
    affine: np.ndarray
    window: tuple[tuple[int, int], ...]
    pad: tuple[tuple[int, int], ...]
    resamples: bool


def zoom_affine(affine: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """`affine` with the same axis directions and voxel sizes `spacing` (MONAI's `zoom_affine`)."""
    rzs = affine[:3, :3]
    zs = np.linalg.cholesky(rzs.T @ rzs).T
    rotation = rzs @ np.linalg.inv(zs)
    out = np.eye(4)
    out[:3, :3] = rotation @ np.diag(np.sign(np.diag(zs)) * np.abs(spacing))
    return out


def shape_and_offset(shape: tuple[int, ...], in_affine: np.ndarray, out_affine: np.ndarray) -> tuple[tuple, np.ndarray]:
    """Output shape covering the input's voxel centres, and the world origin of its first voxel
    (MONAI's `compute_shape_offset` with `scale_extent=False`)."""
    corners = np.asarray(np.meshgrid(*[(0.0, n - 1.0) for n in shape], indexing="ij")).reshape(3, -1)
    corners = np.concatenate((corners, np.ones_like(corners[:1])))
    corners_out = np.linalg.solve(out_affine, in_affine) @ corners
    world = in_affine @ corners
    distances = corners_out[:-1]
    out_shape = np.round(np.ptp(distances / corners_out[-1], axis=1) + 1.0).astype(int)
    for i in range(corners.shape[1]):
        if np.allclose(np.min(distances - distances[:, i : i + 1], 1), 0.0, rtol=AFFINE_TOL):
            return tuple(int(n) for n in out_shape), world[:-1, i]  # this corner is the lowest: origin
    centre = in_affine[:3, :3] @ (np.asarray(shape) / 2.0) + in_affine[:3, 3]
    return tuple(int(n) for n in out_shape), centre - out_affine[:3, :3] @ (out_shape / 2.0)


def plan_ras_grid(
    affine: np.ndarray, shape: tuple[int, ...], spacing: list[float] | None, size: list[int] | None
) -> RasGrid:
    """The RAS output grid of a volume (`affine`, `shape`) at `spacing` (mm; None keeps the
    voxels), centre padded/cropped to `size` (None keeps the whole resampled volume)."""
    affine = np.asarray(affine, dtype=np.float64)
    ornt = nib.orientations.ornt_transform(
        nib.io_orientation(affine), nib.orientations.axcodes2ornt("RAS", labels=RAS_LABELS)
    )
    oriented_affine = affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    axes = tuple(int(axis) for axis in np.argsort(ornt[:, 0]))
    oriented_shape = tuple(int(shape[axis]) for axis in axes)
    resampled_affine, resampled_shape, resamples = oriented_affine, oriented_shape, False
    if spacing:
        target_affine = zoom_affine(oriented_affine, np.asarray(spacing, dtype=np.float64))
        target_shape, origin = shape_and_offset(oriented_shape, oriented_affine, target_affine)
        target_affine[:3, 3] = origin
        # MONAI leaves a grid within AFFINE_TOL of the target as it is, affine included
        unchanged = target_shape == oriented_shape and (
            np.allclose(target_affine, oriented_affine, atol=AFFINE_TOL)
            or np.allclose(np.linalg.solve(oriented_affine, target_affine), np.eye(4), atol=AFFINE_TOL)
        )
        if not unchanged:
            resampled_affine, resampled_shape, resamples = target_affine, target_shape, True
    window, pad = [], []
    for n, target in zip(resampled_shape, size or resampled_shape):
        start = n // 2 - target // 2 if target < n else 0  # ResizeWithPadOrCrop: symmetric pad, centre crop
        window.append((start, start + min(n, target)))
        before = max(target - n, 0) // 2
        pad.append((before, max(target - n, 0) - before))
    shift = np.eye(4)
    shift[:3, 3] = [w[0] - p[0] for w, p in zip(window, pad)]
    return RasGrid(
        axes=axes,
        flips=tuple(bool(ornt[axis, 1] == -1) for axis in axes),
        input_affine=affine[:, [*axes, 3]],
        resampled_affine=resampled_affine,
        resampled_shape=tuple(resampled_shape),
        affine=resampled_affine @ shift,
        window=tuple(window),
        pad=tuple(pad),
        resamples=resamples,
    )


def _sample_axis(volume: torch.Tensor, axis: int, positions: np.ndarray, mode: str) -> torch.Tensor:
    """`volume` sampled along `axis` at continuous voxel `positions` (border clamp).

    Works in blocks along another axis so that the gathered neighbours live in small reused
    buffers: only the output is new memory (page faults on fresh memory cost as much as the
    arithmetic).
    """
    n = volume.shape[axis]
    positions = np.clip(positions, 0.0, n - 1.0)
    out_shape = list(volume.shape)
    out_shape[axis] = len(positions)
    out = torch.empty(out_shape, dtype=volume.dtype)
    along_axis = [1] * volume.ndim
    along_axis[axis] = len(positions)
    nearest = mode == "nearest"
    lower = np.rint(positions) if nearest else np.floor(positions)
    lower_index = torch.from_numpy(lower.astype(np.int64)).reshape(along_axis)
    upper_index = torch.from_numpy(np.minimum(lower.astype(np.int64) + 1, n - 1)).reshape(along_axis)
    weight = torch.from_numpy((positions - lower).astype(np.float32)).reshape(along_axis)
    block_axis = 1 if axis == 0 else 0
    step = max(1, BLOCK_ELEMENTS // (out.numel() // out_shape[block_axis]))
    for start in range(0, out_shape[block_axis], step):
        source = volume.narrow(block_axis, start, min(step, out_shape[block_axis] - start))
        target = out.narrow(block_axis, start, source.shape[block_axis])
        block_shape = target.shape
        if nearest:
            torch.gather(source, axis, lower_index.expand(block_shape), out=target)
            continue
        below = torch.gather(source, axis, lower_index.expand(block_shape))
        above = torch.gather(source, axis, upper_index.expand(block_shape))
        torch.lerp(below, above, weight, out=target)
    return out


def _sample_separable(volume: torch.Tensor, xform: np.ndarray, window: tuple, mode: str) -> torch.Tensor:
    # cheapest order first: the passes that shrink an axis, then those that grow it
    order = sorted(range(3), key=lambda axis: (window[axis][1] - window[axis][0]) / volume.shape[axis])
    for axis in order:
        positions = xform[axis, axis] * np.arange(*window[axis], dtype=np.float64) + xform[axis, 3]
        volume = _sample_axis(volume, axis, positions, mode)
    return volume


def _sample_grid(volume: torch.Tensor, xform: np.ndarray, window: tuple, mode: str) -> torch.Tensor:
    out = torch.empty([w[1] - w[0] for w in window], dtype=volume.dtype)
    extent = np.maximum(np.asarray(volume.shape, dtype=np.float64) - 1.0, 1.0)  # a 1-voxel axis samples voxel 0
    step = max(1, BLOCK_ELEMENTS // (out.numel() // out.shape[0]))
    for start in range(window[0][0], window[0][1], step):
        slab = (np.arange(start, min(start + step, window[0][1]), dtype=np.float64), *window[1:])
        index = np.stack(np.meshgrid(slab[0], *[np.arange(*w, dtype=np.float64) for w in slab[1:]], indexing="ij"), -1)
        normalized = 2.0 * (index @ xform[:3, :3].T + xform[:3, 3]) / extent - 1.0
        grid = torch.from_numpy(normalized[..., ::-1].astype(np.float32))[None]  # grid_sample's order: W, H, D
        sampled = F.grid_sample(volume[None, None], grid, mode=mode, padding_mode="border", align_corners=True)
        out[start - window[0][0] : start - window[0][0] + len(slab[0])] = sampled[0, 0]
    return out


def resample_to_grid(volume: torch.Tensor, grid: RasGrid, mode: str, background: float) -> torch.Tensor:
    """`volume` (float32, on its input grid) on `grid`: reoriented, resampled with `mode`
    ("bilinear" = trilinear, or "nearest"), cropped and padded with `background`."""
    permuted = volume.permute(*grid.axes)  # a view; flips are folded into the sampling positions
    if grid.resamples:
        xform = np.linalg.solve(grid.input_affine, grid.resampled_affine)  # output voxel -> input voxel
        off_diagonal = xform[:3, :3] - np.diag(np.diag(xform[:3, :3]))
        sample = _sample_separable if np.abs(off_diagonal).max() < AXIS_ALIGNED_TOL else _sample_grid
        out = sample(permuted, xform, grid.window, mode)
    else:
        flips = [axis for axis, flip in enumerate(grid.flips) if flip]
        # flip copies even with no axis to flip: a RAS volume kept whole stays the input's memory
        out = (permuted.flip(flips) if flips else permuted)[tuple(slice(*w) for w in grid.window)]
    if any(any(p) for p in grid.pad):
        out = F.pad(out, [n for before_after in reversed(grid.pad) for n in before_after], value=background)
    return out.contiguous()
