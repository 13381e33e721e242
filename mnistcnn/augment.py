"""Training-time augmentation: a random affine map per image (shift, rotation, scale) and an
optional elastic distortion (Simard, Steinkraus and Platt, 2003), applied to the whole batch at
once by bilinear resampling with zero fill."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .config import WARPS, class_names
from .errors import UsageError


class Augment:
    """Random shifts of up to ``shift`` pixels (whole pixels: a padded random crop), rotations of
    up to ``rotate`` degrees, scaling by up to ``scale`` (0.1 means a factor in [0.9, 1.1]) and
    an elastic distortion of strength ``elastic`` (Simard's alpha; 0: none) smoothed over
    ``elastic_sigma`` pixels, for images of ``shape`` (H, W). A training batch holds each of its
    images ``repeats`` times, each copy augmented on its own (Hoffer et al., 2019, "Augment your
    batch"): more images per step from the same epoch of data."""

    def __init__(self, shift: int = 0, rotate: float = 0.0, scale: float = 0.0, elastic: float = 0.0,
                 elastic_sigma: float = 4.0, repeats: int = 1, shape=(28, 28)):
        self.shift, self.rotate, self.scale = shift, rotate, scale
        self.elastic, self.elastic_sigma, self.shape = elastic, elastic_sigma, tuple(shape[:2])
        self.repeats = repeats

    @classmethod
    def for_config(cls, config: dict) -> "Augment":
        return cls(**config["data"]["augment"], shape=config["model"]["input_shape"])

    @property
    def active(self) -> bool:
        return any(getattr(self, name) for name in WARPS)

    def words(self) -> str:
        """What the augmentation does, as a picture's title says it ("none" for nothing)."""
        said = [f"shifts of up to {self.shift} px" * bool(self.shift),
                f"rotations of up to {self.rotate:g}°" * bool(self.rotate),
                f"scaling by up to {self.scale:.0%}" * bool(self.scale),
                f"elastic distortion {self.elastic:g} (smoothed over {self.elastic_sigma:g} px)" * bool(self.elastic),
                f"each image {self.repeats} times a batch" * (self.repeats > 1)]
        return ", ".join(filter(None, said)) or "none"

    def repeated(self, indices: np.ndarray) -> np.ndarray:
        """A training batch's image indices, each ``repeats`` times in a row."""
        return np.repeat(indices, self.repeats) if self.repeats > 1 else indices

    def draw(self, n: int, rng: np.random.Generator):
        """The random parameters for ``n`` images: ``(theta, zoom, shifts, fields)``. Drawn for a
        whole batch at once, so the result does not depend on how the batch is split over threads."""
        theta = np.deg2rad(rng.uniform(-self.rotate, self.rotate, n)) if self.rotate else np.zeros(n)
        zoom = rng.uniform(1 - self.scale, 1 + self.scale, n) if self.scale else np.ones(n)
        shifts = rng.integers(-self.shift, self.shift + 1, size=(n, 2)) if self.shift else np.zeros((n, 2))
        fields = elastic_fields(n, self.shape, self.elastic, self.elastic_sigma, rng) if self.elastic else None
        return theta, zoom, shifts, fields

    def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """batch (N, H, W, C) float32 -> a new augmented batch of the same shape."""
        if not self.active:
            return batch
        return affine_resample(batch, *self.draw(len(batch), rng))


def gaussian_matrix(size: int, sigma: float) -> np.ndarray:
    """``G @ v`` smooths ``v`` (length ``size``) with a Gaussian of ``sigma``, zero beyond the ends."""
    offsets = np.arange(size)[:, None] - np.arange(size)[None, :]
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return (weights / weights[size // 2].sum()).astype(np.float32)


def elastic_fields(n: int, shape, alpha: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Simard's displacement fields, (n, 2, H, W) pixels: uniform noise in [-1, 1], smoothed by
    a Gaussian of ``sigma`` along each axis (two matrix products for the whole batch), times ``alpha``."""
    h, w = shape
    noise = rng.uniform(-1, 1, size=(n, 2, h, w)).astype(np.float32)
    return np.float32(alpha) * (gaussian_matrix(h, sigma) @ noise @ gaussian_matrix(w, sigma).T)


def affine_resample(batch: np.ndarray, theta: np.ndarray, zoom: np.ndarray, shifts: np.ndarray,
                    fields: np.ndarray | None = None) -> np.ndarray:
    """Rotate by ``theta`` (radians) and scale by ``zoom`` about the centre, then shift by
    ``shifts`` (dy, dx) pixels, and move each output pixel's source by ``fields`` (n, 2, H, W),
    if given; one parameter set per image. Pixels from outside take the image's background
    value (its minimum: 0 when scaled, below 0 when standardised)."""
    n, h, w, c = batch.shape
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
    src_y, src_x = cos * dy - sin * dx + np.float32(cy), sin * dy + cos * dx + np.float32(cx)
    if fields is not None:
        src_y, src_x = src_y + fields[:, 0], src_x + fields[:, 1]
    src_y, src_x = np.clip(src_y, -1, h), np.clip(src_x, -1, w)
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


def picture_training_images(config: dict, source, run, count: int, seed: int, path=None, sets=()) -> Path:
    """A PNG grid of the first ``count`` training images as ``config`` (read from ``source``, the
    config of ``run`` if not None, changed by the ``sets`` assignments) preprocesses and augments
    them, drawn with ``seed``. Written to ``path`` (the --out option), else augmented.png in the
    run, or runs/NAME-augmented.png; the --set changes name the default file too (augmented-
    rotate20.png), so that a change tried writes beside the config's own picture."""
    from .atomic import OutputOption, make_folder, written_to
    from .data import Preprocess, prepare_data
    from .plots import image_grid
    from .folders import RUNS_DIR
    from .words import images_of

    given = path is not None
    if given and Path(path).suffix.lower() != ".png":
        raise UsageError(f"--out {path}: the grid is written as a PNG; give a name that ends in .png")
    if given:
        path = Path(path)
    else:
        changed = [assignment.split("=", 1) for assignment in sets]  # checked as KEY=VALUE by the config
        suffix = "".join(f"-{key.rsplit('.', 1)[-1]}{value}" for key, value in changed)
        name = "augmented" + re.sub(r"[^A-Za-z0-9._-]", "", suffix)
        path = run.path / f"{name}.png" if run else RUNS_DIR / f"{config['name']}-{name}.png"
    data = prepare_data(config, source=str(source))
    preprocess = Preprocess.for_config(config, data)
    augment = Augment.for_config(config)
    augmented = augment(preprocess(data.train_x[:count]), np.random.default_rng(seed))
    names = class_names(config)
    whose = f"run {run.path.name}" if run else f"config {Path(source).name}"
    option = OutputOption("--out", "FILE.png", given)
    make_folder(path.parent, option, path)  # once nothing can be refused
    with written_to(option):
        image_grid(augmented, [names[label] for label in data.train_y[:count]], path,
                   f"{whose}: {images_of('train', 0, len(augmented) - 1)}, preprocess "
                   f"{config['data']['preprocess']['type']}; augmentation: {augment.words()}")
    return path
