"""The seed notebook's one-window helpers, its bugs fixed: what its cells call by name.

The engine itself works on whole batches (``functional``); these act on one window, as the
notebook's loops (``reference``) do.
"""
from __future__ import annotations

import numpy as np


def conv_single_step(a_slice_prev: np.ndarray, W: np.ndarray, b) -> float:
    """One output neuron: sum(a_slice_prev * W) + b, as the notebook defined it.

    ``b`` may be a number or an array of one value, such as the (1, 1, 1) slice ``b[:, :, :, c]``:
    the notebook's ``float(b)`` of such an array, deprecated since NumPy 1.25, is now a TypeError."""
    return float(np.sum(a_slice_prev * W) + float(np.asarray(b).reshape(-1)[0]))


def create_mask_from_window(x: np.ndarray) -> np.ndarray:
    """Boolean mask of the first maximum of ``x`` in row-major order (exactly one True).

    The notebook's ``x == max(x)`` marks every tied maximum and so multiplies the gradient.
    """
    mask = np.zeros(np.shape(x), dtype=bool)
    mask.flat[np.argmax(x)] = True
    return mask


def distribute_value(dz, shape) -> np.ndarray:
    """Spread a scalar ``dz`` evenly over a window of ``shape`` (n_H, n_W)."""
    n_H, n_W = shape
    return np.full((n_H, n_W), dz / (n_H * n_W))
