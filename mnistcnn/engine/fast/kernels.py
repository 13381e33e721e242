"""Plain kernels and layer arithmetic (``functional``, ``layers``) in the forms that are fast at
these shapes, for the plan's steps (``steps``) and fused kernels. Each function names the plain
one it stands in for and computes the same values by fewer passes over memory: relu's mask made
while its input is in cache, sums over rows by BLAS rather than row by row, a pool's gradient
written rather than added into zeros where no two windows meet, batchnorm in place. Each equals
its plain counterpart within float32 rounding (tests/engine/test_kernels.py).
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..layers import BatchNorm


def relu_forward(x: np.ndarray, training: bool):
    """``ReLU.forward_pass``, its cache the mask ``x > 0`` made while ``x`` is still in cache, or
    in evaluation, which has no backward pass, no cache at all."""
    return np.maximum(x, 0), (x > 0 if training else None)


def relu_backward(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``ReLU.backward_pass`` from ``relu_forward``'s mask."""
    return dout * mask


def column_sums(rows: np.ndarray) -> np.ndarray:
    """``F.sum_rows`` as a BLAS matrix-vector product with ones: NumPy adds the rows one at a
    time, an inner loop only a row long, which is slow for the tall, narrow arrays of conv
    outputs (a row per pixel, a column per channel); BLAS's blocked sums keep the digits too."""
    return np.ones(rows.shape[0], dtype=rows.dtype) @ rows


def zero_pad(X: np.ndarray, pad: int) -> np.ndarray:
    """``F.zero_pad``: a slice copy into zeros, which np.pad's general machinery is slower at."""
    if pad == 0:
        return X
    m, h, w, c = X.shape
    padded = np.zeros((m, h + 2 * pad, w + 2 * pad, c), dtype=X.dtype)
    padded[:, pad:pad + h, pad:pad + w] = X
    return padded


def conv_forward(A_prev: np.ndarray, W: np.ndarray, b: np.ndarray | None, hparameters: dict, columns=F.im2col):
    """``F.conv_forward``, with the same cache, for a layer's checked shapes; ``columns(A_pad,
    f, stride, n_H, n_W)`` builds the im2col matrix (``convpool.one_channel_columns`` builds
    it faster for one channel)."""
    m, n_H_prev, n_W_prev, n_C_prev = A_prev.shape
    f, n_C = W.shape[0], W.shape[3]
    stride, pad = int(hparameters["stride"]), int(hparameters["pad"])
    n_H, n_W = F.output_size(n_H_prev, f, stride, pad), F.output_size(n_W_prev, f, stride, pad)
    dtype = F.floating_dtype(A_prev, W, b)
    cols = columns(zero_pad(np.asarray(A_prev, dtype=dtype), pad), f, stride, n_H, n_W)
    Z = cols @ W.reshape(f * f * n_C_prev, n_C).astype(dtype, copy=False)
    if b is not None:
        Z += np.asarray(b, dtype=dtype).reshape(n_C)
    return Z.reshape(m, n_H, n_W, n_C), (A_prev, W, b, hparameters, cols)


def conv_weight_gradients(dZ: np.ndarray, cache):
    """``F.conv_weight_gradients``, the bias gradient by ``column_sums``."""
    W, cols = cache[1], cache[4]
    rows = F.dZ_rows(dZ, cache)
    return (cols.T @ rows).reshape(W.shape), column_sums(rows).reshape(1, 1, 1, -1)


def tiled_pool_backward(dA: np.ndarray, cache, mode: str) -> np.ndarray:
    """``F.pool_backward`` for windows that do not overlap (stride == f), from a layer's cache:
    each cell gets at most one window's gradient, so it is written rather than added, and where
    the windows also reach the last row and column (the input's sides multiples of f) they write
    every cell and the array needs no clearing."""
    A_prev, hparameters = cache[0], cache[1]
    f, stride, out_shape = F.pool_geometry(A_prev.shape, hparameters)
    dtype = F.floating_dtype(A_prev, dA)
    dA = np.asarray(dA, dtype=dtype)
    covers_all = A_prev.shape[1:3] == (out_shape[1] * f, out_shape[2] * f)
    dA_prev = np.empty(A_prev.shape, dtype=dtype) if covers_all else np.zeros(A_prev.shape, dtype=dtype)
    slices = list(F.window_slices(f, stride, out_shape[1], out_shape[2]))
    if mode == "average":
        dA_per_cell = dA / dtype.type(f * f)
        for h_slice, w_slice in slices:
            dA_prev[:, h_slice, w_slice, :] = dA_per_cell
        return dA_prev
    A_in = np.asarray(A_prev, dtype=dtype)
    windows = [A_in[:, h_slice, w_slice, :] for h_slice, w_slice in slices]
    for (h_slice, w_slice), first in zip(slices, F.first_max_masks(windows, cache[2])):
        np.multiply(dA, first, out=dA_prev[:, h_slice, w_slice, :])
    return dA_prev


def batchnorm_forward(layer: BatchNorm, x: np.ndarray):
    """``layer.forward_pass(x, training=True)``: the sums by ``column_sums``, in place where the
    arrays are the function's own."""
    gamma, beta = layer.params["gamma"], layer.params["beta"]
    rows = x.reshape(-1, x.shape[-1])
    count = rows.shape[0]
    mean = column_sums(rows) / count
    centred = rows - mean
    var = column_sums(centred * centred) / count
    inv_std = (1.0 / np.sqrt(var + layer.eps)).astype(x.dtype)
    x_hat = np.multiply(centred, inv_std, out=centred)
    out = x_hat * gamma
    out += beta
    return out.reshape(x.shape), (x_hat.reshape(x.shape), inv_std, mean, var)


def batchnorm_backward(layer: BatchNorm, dout: np.ndarray, cache):
    """``layer.backward_pass(dout, cache)`` for a training cache: the sums by ``column_sums``,
    in place where the arrays are the function's own."""
    x_hat, inv_std = cache[:2]
    rows = dout.reshape(-1, dout.shape[-1])
    x_hat = x_hat.reshape(rows.shape)
    dbeta = column_sums(rows)
    dgamma = column_sums(rows * x_hat)
    count = rows.shape[0]
    dx = x_hat * (dgamma / count).astype(dout.dtype)
    np.subtract(rows, dx, out=dx)
    dx -= (dbeta / count).astype(dout.dtype)
    dx *= (layer.params["gamma"] * inv_std).astype(dout.dtype)
    return dx.reshape(dout.shape), {"gamma": dgamma, "beta": dbeta}
