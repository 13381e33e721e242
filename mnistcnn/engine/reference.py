"""The seed notebook's loop algorithms, its bugs fixed: the reference every faster path is
tested against.

Slow on purpose (a Python loop over every example, pixel and channel): the plainest statement
of what the kernels compute, for reading and for tests, never for training. Fixes: pad 0
works, pool_backward reads dA[i, h, w, c], average mode spreads dA[i, h, w, c] / (f*f), a max
window sends its gradient to its first maximum only, and conv_single_step takes the bias as the
slice b[:, :, :, c], which the notebook's float() no longer converts. Named ``*_loop``; the
backward loops take the arrays they need, not the notebook's cache. Nothing here comes from
``functional`` (output sizes, padding and slices are written out again), so that a mistake
there cannot hide in both.
"""
import numpy as np

from .notebook import conv_single_step, create_mask_from_window, distribute_value


def conv_forward_loop(A_prev, W, b, hparameters):
    """Z (m, n_H, n_W, C): for every example, output pixel and channel, the sum of the window
    of A_prev (m, H, W, C_prev) times the filter W[:, :, :, c] (f, f, C_prev), plus b[c]."""
    m, n_H_prev, n_W_prev, _ = A_prev.shape
    f, _, _, n_C = W.shape
    stride, pad = hparameters["stride"], hparameters["pad"]
    n_H = (n_H_prev - f + 2 * pad) // stride + 1
    n_W = (n_W_prev - f + 2 * pad) // stride + 1
    A_pad = np.pad(A_prev, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    Z = np.zeros((m, n_H, n_W, n_C))
    for i in range(m):
        for h in range(n_H):
            for w in range(n_W):
                for c in range(n_C):
                    window = A_pad[i, h * stride:h * stride + f, w * stride:w * stride + f, :]
                    Z[i, h, w, c] = conv_single_step(window, W[:, :, :, c], b[:, :, :, c])
    return Z


def conv_backward_loop(dZ, A_prev, W, hparameters):
    """(dA_prev, dW, db): every output pixel sends W * dZ back to the window it read, and adds
    its window times dZ to dW and dZ to db."""
    m, n_H_prev, n_W_prev, n_C_prev = A_prev.shape
    f, _, _, n_C = W.shape
    stride, pad = hparameters["stride"], hparameters["pad"]
    _, n_H, n_W, _ = dZ.shape
    A_pad = np.pad(A_prev, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dA_pad = np.zeros_like(A_pad, dtype=np.float64)
    dW = np.zeros(W.shape)
    db = np.zeros((1, 1, 1, n_C))
    for i in range(m):
        for h in range(n_H):
            for w in range(n_W):
                for c in range(n_C):
                    hs, ws = h * stride, w * stride
                    dA_pad[i, hs:hs + f, ws:ws + f, :] += W[:, :, :, c] * dZ[i, h, w, c]
                    dW[:, :, :, c] += A_pad[i, hs:hs + f, ws:ws + f, :] * dZ[i, h, w, c]
                    db[:, :, :, c] += dZ[i, h, w, c]
    return dA_pad[:, pad:pad + n_H_prev, pad:pad + n_W_prev, :], dW, db


def pool_forward_loop(A_prev, hparameters, mode="max"):
    """A (m, n_H, n_W, C): each f x f window's maximum or mean, channel by channel."""
    m, n_H_prev, n_W_prev, n_C = A_prev.shape
    f, stride = hparameters["f"], hparameters["stride"]
    n_H, n_W = (n_H_prev - f) // stride + 1, (n_W_prev - f) // stride + 1
    A = np.zeros((m, n_H, n_W, n_C))
    for i in range(m):
        for h in range(n_H):
            for w in range(n_W):
                for c in range(n_C):
                    window = A_prev[i, h * stride:h * stride + f, w * stride:w * stride + f, c]
                    A[i, h, w, c] = np.max(window) if mode == "max" else np.mean(window)
    return A


def pool_backward_loop(dA, A_prev, hparameters, mode="max"):
    """dA_prev: each window's gradient to its first maximum (max) or spread evenly (average)."""
    f, stride = hparameters["f"], hparameters["stride"]
    m, n_H, n_W, n_C = dA.shape
    dA_prev = np.zeros(A_prev.shape)
    for i in range(m):
        for h in range(n_H):
            for w in range(n_W):
                for c in range(n_C):
                    hs, ws = h * stride, w * stride
                    if mode == "max":
                        window = A_prev[i, hs:hs + f, ws:ws + f, c]
                        dA_prev[i, hs:hs + f, ws:ws + f, c] += create_mask_from_window(window) * dA[i, h, w, c]
                    else:
                        dA_prev[i, hs:hs + f, ws:ws + f, c] += distribute_value(dA[i, h, w, c], (f, f))
    return dA_prev
