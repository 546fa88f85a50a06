"""Brain MRI: the T1-like head volume of the NIfTI generator (stands for OASIS)."""

from __future__ import annotations

import numpy as np

from medlatent.demo.shapes import ellipse, grid, smooth_noise, soft


def brain_mri(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """T1-like head on an RAS grid: bright scalp fat, dark skull, CSF, grey and white matter, bias field."""
    x, y, z = grid(shape)
    head = [x, y, z]
    signal = 900.0 * ellipse(head, (0, 0, 0), (0.92, 0.95, 0.95), 0.04)
    signal = signal - 750.0 * ellipse(head, (0, 0, 0), (0.84, 0.87, 0.87), 0.04)
    signal = signal + 100.0 * ellipse(head, (0, 0, 0), (0.78, 0.81, 0.81), 0.04)
    signal = signal + 300.0 * ellipse(head, (0, 0, 0), (0.74, 0.77, 0.77), 0.04)
    signal = signal + 250.0 * ellipse(head, (0, 0.05, 0.05), (0.55, 0.6, 0.55), 0.15) * soft(
        smooth_noise(rng, shape, 0.04), 0.6
    )
    for side in (-1, 1):
        signal = signal - 550.0 * ellipse(head, (side * 0.12, 0.0, 0.1), (0.08, 0.3, 0.15), 0.2)
    bias = np.exp(0.12 * smooth_noise(rng, shape, 0.3))
    signal = signal.clip(0) * bias
    return np.hypot(signal + 15.0 * rng.standard_normal(shape), 15.0 * rng.standard_normal(shape))
