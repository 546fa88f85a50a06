"""Shapes and textures the generators draw with, on centred pixel grids."""

from __future__ import annotations

import numpy as np


def grid(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Pixel-centre coordinates per axis, centred, in units of half the smallest side (circles stay round)."""
    half = min(shape) / 2
    axes = [(np.arange(n) + 0.5 - n / 2) / half for n in shape]
    return np.meshgrid(*axes, indexing="ij")


def soft(signed: np.ndarray, edge: float) -> np.ndarray:
    """1 where `signed` < 0, 0 where > 0, with a smooth edge of width ~`edge`."""
    return 0.5 * (1.0 - np.tanh(signed / edge))


def ellipse(
    coords: list[np.ndarray], centre: tuple[float, ...], radii: tuple[float, ...], edge: float = 0.1
) -> np.ndarray:
    """Soft ellipse/ellipsoid mask; `edge` is relative to the radii."""
    radius = np.sqrt(sum(((c - m) / r) ** 2 for c, m, r in zip(coords, centre, radii)))
    return soft(radius - 1.0, edge)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered noise; `sigma` is a fraction of the smallest side."""
    white = rng.standard_normal(shape)
    frequencies = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
    transfer = np.exp(-2.0 * (np.pi * sigma * min(shape)) ** 2 * sum(f**2 for f in frequencies))
    smooth = np.fft.ifftn(np.fft.fftn(white) * transfer).real
    return (smooth - smooth.mean()) / (smooth.std() + 1e-12)


def segment_distance(
    coords: list[np.ndarray], start: np.ndarray, end: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Scaled distance of every point to a segment, and the position t in [0, 1] along it."""
    points = np.stack(coords, axis=-1)
    direction = end - start
    t = np.clip(((points - start) @ direction) / (direction @ direction), 0.0, 1.0)
    nearest = start + t[..., None] * direction
    return np.sqrt((((points - nearest) / scale) ** 2).sum(axis=-1)), t


def to_uint(display: np.ndarray, low: float, gain: float, bits: int) -> np.ndarray:
    """Display values in [0, 1] as unsigned integers `low + display * gain`, clipped to `bits` bits."""
    return np.clip(np.round(low + display * gain), 0, 2**bits - 1).astype(np.uint16)


def pick(rng: np.random.Generator, options: tuple, weights: tuple[float, ...]):
    """One of `options`, drawn with probabilities `weights`."""
    return options[int(rng.choice(len(options), p=weights))]
