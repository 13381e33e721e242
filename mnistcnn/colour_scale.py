"""How a layer's values are coloured, one rule for inspect-layer's pictures and serve's page: one
scale for all the values shown together, so that channels compare by colour."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Scale(NamedTuple):
    """The values the colour map's two ends stand for; ``signed``: a diverging map, symmetric about
    0, whose neutral middle colour is 0 (``low == -high``)."""

    low: float
    high: float
    signed: bool


def colour_scale(values: np.ndarray, signed: bool | None = None) -> Scale:
    """The scale of ``values``: signed when they have both signs (a conv's output before its relu,
    batchnorm, tanh, a dense layer), so that what is negative, and a relu would zero, shows; else
    from the smallest to the largest (relu, pooling of non-negative maps, sigmoid). ``signed=True``
    asks for a signed scale whatever the values (gradients, whose sign is their meaning)."""
    low, high = float(np.min(values)), float(np.max(values))
    if signed is None:
        signed = low < 0 < high
    if signed:
        largest = max(-low, high)
        return Scale(-largest, largest, True)
    return Scale(low, high, False)
