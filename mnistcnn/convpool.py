"""A first convolution and the 2x2 max pool after it, computed together.

Apart, the convolution writes its whole output (LeNet: 28x28x32 per image), the pool reads it
through four strided slices and its backward writes a gradient of the same size through four
more, with only ``C`` contiguous numbers per step of NumPy's inner loop. Together, the
convolution's rows are ordered by position in the pooling window: each of the four window
positions is one contiguous block, so the pool is three element-wise maxima of whole blocks
and its backward four contiguous products, and the weight gradient is still one GEMM.

The forward values are those of ``functional.conv_forward`` then ``pool_forward`` exactly (each
output is the same dot product; the bias is added after the max, which rounding cannot change,
because it is monotone). Gradients are the same sums taken in another order. Only a one-channel
input whose gradient nobody needs (a network's first layer) takes this path.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import functional as F


class Cache(NamedTuple):
    cols: np.ndarray    # (f*f, 4*m*h*w): the input under each tap, rows by window position first
    Z: np.ndarray       # (4, m*h*w, C): the convolution (no bias) at each window position
    pooled: np.ndarray  # (m*h*w, C): the maximum of the four, no bias
    shape: tuple        # (f, m, h, w, C)


# what a fused max pool keeps in place of its own cache: its backward passes the gradient on
POOLED_BY_CONV = "pooled by the convolution before it"


def supported(input_shape, kernel: int, stride: int, pad: int, pool_size: int, pool_stride: int) -> bool:
    """One input channel, a 2x2 stride-2 pool, and at least one pooled output each way."""
    n_H_prev, n_W_prev, c_prev = input_shape
    n_H, n_W = (F.output_size(n, kernel, stride, pad) for n in (n_H_prev, n_W_prev))
    return c_prev == 1 and pool_size == 2 and pool_stride == 2 and n_H >= 2 and n_W >= 2


def pooled_columns(A_pad: np.ndarray, f: int, stride: int, h: int, w: int) -> np.ndarray:
    """``(f*f, 4*m*h*w)``: for tap (a, b), the input pixel under it at every conv output that a
    2x2 pool reads, ordered (window row, window column, image, pooled row, pooled column).
    One strided-view copy; ``A_pad`` is (m, H, W, 1)."""
    m = A_pad.shape[0]
    s_m, s_h, s_w, _ = A_pad.strides
    view = as_strided(A_pad, (f, f, 2, 2, m, h, w),
                      (s_h, s_w, stride * s_h, stride * s_w, s_m, 2 * stride * s_h, 2 * stride * s_w),
                      writeable=False)
    cols = np.empty(view.shape, dtype=A_pad.dtype)
    cols[...] = view
    return cols.reshape(f * f, 4 * m * h * w)


def conv_pool_forward(A_prev: np.ndarray, W: np.ndarray, b: np.ndarray | None, hparameters: dict):
    """``pool_forward(conv_forward(A_prev, W, b, hparameters), {"f": 2, "stride": 2})``: returns
    the pooled ``(m, h, w, C)`` and a ``Cache``. A_prev (m, H, W, 1), W (f, f, 1, C)."""
    F._require_4d("A_prev", A_prev)
    m, n_H_prev, n_W_prev, c_prev = A_prev.shape
    f, _, _, c = W.shape
    stride, pad = int(hparameters["stride"]), int(hparameters["pad"])
    if W.shape[2] != c_prev or not supported((n_H_prev, n_W_prev, c_prev), f, stride, pad, 2, 2):
        raise ValueError(f"the fused conv and pool needs a one-channel input and room for a 2x2 pool; "
                         f"got input {A_prev.shape}, W {W.shape}")
    h, w = F.output_size(n_H_prev, f, stride, pad) // 2, F.output_size(n_W_prev, f, stride, pad) // 2
    dtype = F._floating(A_prev, W, b)
    cols = pooled_columns(F.zero_pad(np.asarray(A_prev, dtype=dtype), pad), f, stride, h, w)
    Z = (cols.T @ W.reshape(f * f, c).astype(dtype, copy=False)).reshape(4, m * h * w, c)
    pooled = np.maximum(Z[0], Z[1])
    np.maximum(pooled, Z[2], out=pooled)
    np.maximum(pooled, Z[3], out=pooled)
    out = pooled if b is None else pooled + np.asarray(b, dtype=dtype).reshape(c)
    return out.reshape(m, h, w, c), Cache(cols, Z, pooled, (f, m, h, w, c))


def conv_pool_backward(dout: np.ndarray, cache: Cache):
    """``(dW, db)``: each pooled gradient goes to the first maximum of its window in row-major
    order (PyTorch's rule, as ``functional.pool_backward``), then through the convolution."""
    f, m, h, w, c = cache.shape
    if np.shape(dout) != (m, h, w, c):
        raise ValueError(f"dout must have the pooled output's shape {(m, h, w, c)}, got {np.shape(dout)}")
    Z, pooled = cache.Z, cache.pooled
    d_pooled = np.asarray(dout, dtype=Z.dtype).reshape(pooled.shape)
    dZ = np.empty_like(Z)
    unclaimed = None  # windows whose maximum has not been met yet (None: all of them)
    for k in range(4):
        if k == 3:
            first = unclaimed  # every finite window has its maximum somewhere: here, if not before
        else:
            first = Z[k] == pooled
            if unclaimed is None:
                unclaimed = ~first
            else:
                first &= unclaimed
                unclaimed ^= first
        np.multiply(d_pooled, first, out=dZ[k])
    dZ2 = dZ.reshape(4 * m * h * w, c)
    dW = (cache.cols @ dZ2).reshape(f, f, 1, c)
    db = F.column_sums(dZ2).reshape(1, 1, 1, c)
    return dW, db
