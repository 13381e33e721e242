"""How messages, logs and reports say a number of things: one rule for the plural."""
from __future__ import annotations


def counted(n, noun: str, plural: str | None = None) -> str:
    """``n`` with its noun: ``1 epoch``, ``3 epochs``; ``plural`` where adding an s is wrong
    (``worker processes``)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def images_of(split: str, first: int, last: int) -> str:
    """A split's images from ``first`` to ``last`` (included), as titles and reports name them:
    ``validation image 5``, ``train images 0 to 15``."""
    return f"{split} image {first}" if first == last else f"{split} images {first} to {last}"
