"""Training-time augmentation: a random affine map per image (shift, rotation, scale),
applied to the whole batch at once by bilinear resampling with zero fill."""
from __future__ import annotations

from pathlib import Path

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
    if n == 0:
        return batch.copy()
    # a frame of background (1 pixel above and left, 2 below and right) lets every bilinear tap
    # read memory: source points outside the image are clamped into the frame
    background = batch.min(axis=(1, 2, 3))
    framed = np.empty((n, h + 3, w + 3, c), dtype=batch.dtype)
    framed[:] = background[:, None, None, None]
    framed[:, 1:h + 1, 1:w + 1] = batch
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    # inverse map: for every output pixel, where it comes from in the input
    dy = ys[None] - np.float32(cy) - shifts[:, 0, None, None].astype(np.float32)
    dx = xs[None] - np.float32(cx) - shifts[:, 1, None, None].astype(np.float32)
    cos = (np.cos(theta) / zoom).astype(np.float32)[:, None, None]
    sin = (np.sin(theta) / zoom).astype(np.float32)[:, None, None]
    src_y = np.clip(cos * dy - sin * dx + np.float32(cy), -1, h)
    src_x = np.clip(sin * dy + cos * dx + np.float32(cx), -1, w)
    y0, x0 = np.floor(src_y), np.floor(src_x)
    fy, fx = src_y - y0, src_x - x0
    # flat index of the top-left tap in the framed batch
    top_left = ((np.arange(n)[:, None, None] * (h + 3) + (y0.astype(np.int64) + 1)) * (w + 3)
                + (x0.astype(np.int64) + 1))
    pixels = framed.reshape(-1, c)
    out = np.zeros_like(batch)
    for offset, weight in ((0, (1 - fy) * (1 - fx)), (1, (1 - fy) * fx), (w + 3, fy * (1 - fx)), (w + 4, fy * fx)):
        out += np.take(pixels, top_left + offset, axis=0) * weight[..., None]
    return out


def picture_training_images(config: dict, count: int, seed: int, path, source: str = "<config>") -> None:
    """A PNG grid of the first ``count`` training images as ``config`` preprocesses and augments
    them (augmentation drawn with ``seed``)."""
    from . import config as cfg
    from .data import Preprocess
    from .plots import image_grid
    from .trainer import prepare_data

    data = prepare_data(config, source=source)
    preprocess = Preprocess(**config["data"]["preprocess"]).fit(data.train_x)
    augmented = Augment(**config["data"]["augment"])(preprocess(data.train_x[:count]), np.random.default_rng(seed))
    names = cfg.class_names(config)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image_grid(augmented, [names[label] for label in data.train_y[:count]], path,
               f"{config['name']}: preprocess {config['data']['preprocess']['type']}, "
               f"augment {config['data']['augment']}")
