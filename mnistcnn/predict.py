"""Classify a person's own digit pictures: turn any PNG or JPEG into an MNIST-style 28x28 image
the way MNIST itself was made, then run the model.

MNIST's digits are white on black, size-normalised to fit a 20x20 box (keeping the aspect
ratio, anti-aliased), and placed in a 28x28 field so that their centre of mass is at the
centre. A photo or drawing needs the same treatment, or the model sees something it never
learnt: a dark digit on white, or a digit filling the whole frame.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataError, UsageError
from .engine.losses import softmax

SIDE, BOX = 28, 20


def read_grey(path) -> np.ndarray:
    """A picture file as a float array of grey levels 0..255 (transparent parts count as white)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                image = image.convert("RGBA")
                white = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(white, image)
            grey = np.asarray(image.convert("L"), dtype=np.float64)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image Pillow can read; give a PNG or JPEG of a digit") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: the image is damaged or unreadable ({err})") from None
    if grey.ndim != 2 or grey.size == 0:
        raise DataError(f"{path}: the image has no pixels")
    return grey


def is_mnist_style(grey: np.ndarray) -> bool:
    """Already 28x28 with a dark background: an MNIST image, used as it is."""
    return grey.shape == (SIDE, SIDE) and _background(grey) < 128


def _background(grey: np.ndarray) -> float:
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return float(np.median(border))


def mnist_style(grey: np.ndarray, source="image") -> np.ndarray:
    """Any grey picture of one digit -> uint8 (28, 28): white digit on black, fitted into a
    20x20 box and centred by mass, as MNIST was made."""
    from PIL import Image

    if is_mnist_style(grey):
        return np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    background = _background(grey)
    ink = grey - background if background < 128 else background - grey  # the digit is now bright
    np.clip(ink, 0, None, out=ink)
    peak = ink.max()
    if peak < 32:  # less than an eighth of full contrast: nothing that looks like a digit
        raise DataError(f"{source}: no digit found (the picture is almost uniform); crop it to one dark-on-light "
                        "or light-on-dark digit")
    ink[ink < 0.1 * peak] = 0  # paper texture and JPEG noise are not part of the digit
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] * (255.0 / peak)
    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    boxed = np.asarray(Image.fromarray(crop.astype(np.float32), mode="F").resize(size, Image.LANCZOS),
                       dtype=np.float64)
    np.clip(boxed, 0, 255, out=boxed)
    field = np.zeros((SIDE, SIDE))
    mass = boxed.sum()
    ys, xs = np.indices(boxed.shape)
    cy, cx = (ys * boxed).sum() / mass, (xs * boxed).sum() / mass
    # place the box so its centre of mass lands on the field's centre, staying inside the field
    top = int(np.clip(round(SIDE / 2 - 0.5 - cy), 0, SIDE - boxed.shape[0]))
    left = int(np.clip(round(SIDE / 2 - 0.5 - cx), 0, SIDE - boxed.shape[1]))
    field[top:top + boxed.shape[0], left:left + boxed.shape[1]] = boxed
    return np.rint(field).astype(np.uint8)


def predict_files(model, preprocess, paths, classes: list[str], top: int = 3) -> list[dict]:
    """Top-``top`` classes with probabilities for each picture file."""
    height, width, channels = model.input_shape
    if (height, width, channels) != (SIDE, SIDE, 1):
        raise UsageError(f"predict works with models of 28x28x1 input; this one takes {height}x{width}x{channels}")
    images = np.stack([mnist_style(read_grey(p), p) for p in paths])[..., None]
    probs = softmax(model.predict_logits(images, 256, preprocess).astype(np.float64))
    results = []
    for path, image, p in zip(paths, images, probs):
        order = np.argsort(-p, kind="stable")[:top]
        results.append({"path": str(path), "prediction": classes[order[0]],
                        "top": [{"class": classes[i], "probability": float(p[i])} for i in order],
                        "image": image[..., 0]})
    return results
