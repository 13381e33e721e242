"""The backward pass of a max pool whose windows overlap (a window larger than its stride, as
the seed notebook's 3x3 pool with stride 2), by cell number.

Stands in for ``functional.pool_backward`` (max mode) there. The plain engine routes each
window's gradient with a few masked products per window offset, and overlapping windows
accumulate through strided slices whose inner loop is only ``C`` numbers long. Here each
window's first maximum is located as the number of offsets that come before it (a running count
of the windows that have not met their maximum yet), that offset becomes the number of an input
cell, and one ``np.bincount`` sums every window's gradient into its cell. The tie rule is the
plain engine's (PyTorch's): the first maximum in row-major window order. The sums are the plain
engine's, added in its order, in float64 before rounding to the gradient's type.
"""
from __future__ import annotations

import functools

import numpy as np

from .. import functional as F


@functools.lru_cache(maxsize=8)
def _window_cells(shape: tuple, f: int, stride: int, out_shape: tuple):
    """The number of each window's first cell in the flattened input, shaped like the output,
    and the number to add to it for each window offset (row-major)."""
    m, H, W, C = shape
    _, n_H, n_W, _ = out_shape
    dtype = np.int32 if m * H * W * C < 2 ** 31 else np.int64
    cells = np.arange(m * H * W * C, dtype=dtype).reshape(shape)
    first = np.ascontiguousarray(cells[:, :stride * n_H:stride, :stride * n_W:stride])
    shifts = np.array([(i * W + j) * C for i in range(f) for j in range(f)], dtype=dtype)
    first.flags.writeable = shifts.flags.writeable = False
    return first, shifts


def max_pool_backward(dA: np.ndarray, A_prev: np.ndarray, A: np.ndarray, f: int, stride: int) -> np.ndarray:
    """``dA_prev`` for a max pool of ``A_prev`` that gave ``A`` (the plain ``pool_backward``'s
    numbers): each window's gradient goes to its first maximum, overlapping windows add up."""
    _, n_H, n_W, _ = A.shape
    first, shifts = _window_cells(A_prev.shape, f, stride, A.shape)
    found = np.zeros(A.shape, dtype=bool)      # windows whose maximum an earlier offset holds
    offset = np.zeros(A.shape, dtype=np.min_scalar_type(f * f))  # each window's offset of its first maximum
    for k in range(f * f - 1):  # the last offset is where a window's maximum is if not before
        i, j = divmod(k, f)
        found |= A_prev[:, F.offset_slice(i, n_H, stride), F.offset_slice(j, n_W, stride)] == A
        offset += ~found
    cells = first + shifts[offset]
    # Windows in reverse order: each cell then adds its windows' gradients in order of window
    # offset, as the plain engine does, so that in float64 the sums are its own to the last bit.
    sums = np.bincount(cells.reshape(-1)[::-1], weights=dA.reshape(-1)[::-1], minlength=A_prev.size)
    return sums.astype(np.result_type(A_prev.dtype, dA.dtype), copy=False).reshape(A_prev.shape)
