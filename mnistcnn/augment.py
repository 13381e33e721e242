"""Training-time augmentation: a random affine map per image (shift, rotation, scale),
applied to the whole batch at once by bilinear resampling with zero fill."""
from __future__ import annotations

import numpy as np


class Augment:
    """Random shifts of up to ``shift`` pixels (whole pixels), rotations of up to ``rotate``
    degrees and scaling by up to ``scale`` (0.1 means a factor in [0.9, 1.1])."""

    def __init__(self, shift: int = 0, rotate: float = 0.0, scale: float = 0.0):
        self.shift, self.rotate, self.scale = shift, rotate, scale

    @property
    def active(self) -> bool:
        return bool(self.shift or self.rotate or self.scale)

    def draw(self, n: int, rng: np.random.Generator):
        """The random parameters for ``n`` images: ``(theta, zoom, shifts)``. Drawn for a whole
        batch at once, so the result does not depend on how the batch is split over threads."""
        theta = np.deg2rad(rng.uniform(-self.rotate, self.rotate, n)) if self.rotate else np.zeros(n)
        zoom = rng.uniform(1 - self.scale, 1 + self.scale, n) if self.scale else np.ones(n)
        shifts = rng.integers(-self.shift, self.shift + 1, size=(n, 2)) if self.shift else np.zeros((n, 2))
        return theta, zoom, shifts

    def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """batch (N, H, W, C) float32 -> a new augmented batch of the same shape."""
        if not self.active:
            return batch
        return affine_resample(batch, *self.draw(len(batch), rng))


def affine_resample(batch: np.ndarray, theta: np.ndarray, zoom: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Rotate by ``theta`` (radians) and scale by ``zoom`` about the centre, then shift by
    ``shifts`` (dy, dx) pixels; one parameter set per image. Pixels from outside take the
    image's background value (its minimum: 0 when scaled, below 0 when standardised)."""
    n, h, w, c = batch.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    # inverse map: for every output pixel, where it comes from in the input
    dy = ys[None] - cy - shifts[:, 0, None, None]
    dx = xs[None] - cx - shifts[:, 1, None, None]
    cos, sin = (np.cos(theta) / zoom)[:, None, None], (np.sin(theta) / zoom)[:, None, None]
    src_y = cos * dy - sin * dx + cy
    src_x = sin * dy + cos * dx + cx
    y0, x0 = np.floor(src_y).astype(np.int64), np.floor(src_x).astype(np.int64)
    fy, fx = (src_y - y0).astype(np.float32), (src_x - x0).astype(np.float32)
    image = np.arange(n)[:, None, None]
    out = np.zeros_like(batch)
    coverage = np.zeros(batch.shape[:3], dtype=np.float32)
    for oy, ox, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = y0 + oy, x0 + ox
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        sample = batch[image, np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]  # (N, H, W, C)
        out += sample * (weight * inside)[..., None]
        coverage += weight * inside
    # each image's own background: the same whichever other images share its batch
    background = batch.min(axis=(1, 2, 3)) if batch.size else np.zeros(n, dtype=batch.dtype)
    if np.any(background != 0):
        out += ((1 - coverage) * background[:, None, None])[..., None].astype(out.dtype)
    return out
