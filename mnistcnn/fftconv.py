"""Convolution in the frequency domain, with the DFT written as real float32 matrix products.

For a stride-1 convolution with many channels (LeNet's 5x5x32x64) this does a quarter of the
multiply-adds of im2col and replaces the backward pass's 25 scatter-adds with GEMMs:

1. The half spectrum of every image and channel on an ``(H + pad) x (W + pad)`` grid, large
   enough for the circular wrap-around of a DFT to land only on the zero padding: one real
   transform along the width (to the half spectrum), then one along the height.
2. Per frequency ``k``, a complex channel product ``Y[k] = X[k] @ Wf[k]``, written as one real
   GEMM ``[Xr Xi] @ [[Wr, Wi], [-Wi, Wr]]`` batched over the frequencies.
3. The inverse transform along the height, then along the width, evaluated only at the
   output positions.

Every step is a real linear map, so the backward pass is the same steps in reverse with the
matrices transposed: exact, not an approximation. numpy.fft is not used: at these sizes its
per-call overhead loses to a few float32 GEMMs.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from . import functional as F


class Plan(NamedTuple):
    along_w: np.ndarray
    along_h: np.ndarray
    back_h: np.ndarray
    back_w: np.ndarray
    taps: np.ndarray
    n_h: int
    n_l: int
    n_Ho: int
    n_Wo: int


def grid_size(n: int, f: int, pad: int) -> int:
    """DFT length along one axis: the smallest with no wrap-around into the wanted outputs."""
    return max(n + pad, f)


def supported(n_H: int, n_W: int, f: int, stride: int, pad: int) -> bool:
    """Stride 1, and every output position fits on the grid (pad < f)."""
    return stride == 1 and pad < f and F.output_size(n_H, f, 1, pad) >= 1 and F.output_size(n_W, f, 1, pad) >= 1


def estimated_macs(n_H: int, n_W: int, c_prev: int, c: int, f: int, pad: int) -> int:
    """Multiply-adds of one forward pass per image: the four axis transforms and the products."""
    n_h, n_w = grid_size(n_H, f, pad), grid_size(n_W, f, pad)
    n_l = n_w // 2 + 1
    n_Ho, n_Wo = F.output_size(n_H, f, 1, pad), F.output_size(n_W, f, 1, pad)
    forward = 2 * n_l * n_W * n_H * c_prev + 2 * n_h * n_H * 2 * n_l * c_prev
    inverse = 2 * n_Ho * n_h * 2 * n_l * c + n_Wo * 2 * n_l * n_Ho * c
    return forward + 4 * n_h * n_l * c_prev * c + inverse


@lru_cache(maxsize=64)
def plan(n_H: int, n_W: int, f: int, pad: int, dtype_name: str) -> Plan:
    """The DFT matrices of one layer geometry, each a real matrix for one axis.

    Forward, image -> half spectrum:  ``along_w`` (2L, W), rows (l, re/im) of e^{-i...};
    then ``along_h`` (2*Nh, H), the cos rows over the sin rows (the complex product's parts are
    combined afterwards). Inverse, spectrum -> output: ``back_h`` (2*Ho, Nh), cos over sin,
    then ``back_w`` (Wo, 2L), which also weighs the half spectrum and takes the real part.
    Kernel taps -> spectrum: ``taps`` (2K, f*f), rows (k, l, re/im); tap (a, b) sits at grid
    position (pad - a, pad - b).
    """
    n_h, n_w = grid_size(n_H, f, pad), grid_size(n_W, f, pad)
    n_l = n_w // 2 + 1  # the half spectrum along the width: a real input's DFT is symmetric
    n_Ho, n_Wo = F.output_size(n_H, f, 1, pad), F.output_size(n_W, f, 1, pad)

    def angles(out_index, in_index, n):
        return 2 * np.pi * np.outer(out_index, in_index) / n

    a_w = angles(np.arange(n_l), np.arange(n_W), n_w)
    along_w = np.stack([np.cos(a_w), -np.sin(a_w)], axis=1).reshape(2 * n_l, n_W)
    a_h = angles(np.arange(n_h), np.arange(n_H), n_h)
    along_h = np.concatenate([np.cos(a_h), np.sin(a_h)])
    b_h = angles(np.arange(n_Ho), np.arange(n_h), n_h)
    back_h = np.concatenate([np.cos(b_h), np.sin(b_h)])
    # every column but 0 (and n_w/2) stands for itself and its mirror image
    weight = np.full(n_l, 2.0)
    weight[0] = 1.0
    if n_w % 2 == 0:
        weight[-1] = 1.0
    b_w = angles(np.arange(n_Wo), np.arange(n_l), n_w)
    back_w = np.stack([np.cos(b_w) * weight, -np.sin(b_w) * weight], axis=2).reshape(n_Wo, 2 * n_l) / (n_h * n_w)
    tap = pad - np.arange(f)
    t_h, t_w = angles(np.arange(n_h), tap, n_h), angles(np.arange(n_l), tap, n_w)
    phase = t_h[:, None, :, None] + t_w[None, :, None, :]  # (Nh, L, f, f)
    taps = np.stack([np.cos(phase), -np.sin(phase)], axis=2).reshape(2 * n_h * n_l, f * f)
    dtype = np.dtype(dtype_name)
    arrays = (np.ascontiguousarray(m, dtype=dtype) for m in (along_w, along_h, back_h, back_w, taps))
    return Plan(*arrays, n_h=n_h, n_l=n_l, n_Ho=n_Ho, n_Wo=n_Wo)


def _spectral_weights(W: np.ndarray, taps: np.ndarray, k: int) -> np.ndarray:
    """``[[Wr, Wi], [-Wi, Wr]]`` per frequency, shape (K, 2*C_prev, 2*C)."""
    f, _, c_prev, c = W.shape
    Wf = (taps @ W.reshape(f * f, c_prev * c)).reshape(k, 2, c_prev, c)
    big = np.empty((k, 2 * c_prev, 2 * c), dtype=W.dtype)
    big[:, :c_prev, :c] = Wf[:, 0]
    big[:, :c_prev, c:] = Wf[:, 1]
    np.negative(Wf[:, 1], out=big[:, c_prev:, :c])
    big[:, c_prev:, c:] = Wf[:, 0]
    return big


def conv_forward(A_prev: np.ndarray, W: np.ndarray, b: np.ndarray, hparameters: dict):
    """Same contract as ``functional.conv_forward`` (stride 1, pad < f); the cache's last entry
    holds the input spectrum and the spectral weights for the backward pass."""
    F._require_4d("A_prev", A_prev)
    m, n_H, n_W, c_prev = A_prev.shape
    f, _, _, c = W.shape
    stride, pad = int(hparameters["stride"]), int(hparameters["pad"])
    if not supported(n_H, n_W, f, stride, pad):
        raise ValueError(f"the frequency-domain conv needs stride 1 and pad < f; got stride {stride}, pad {pad}, f {f}")
    dtype = F._floating(A_prev, W, b)
    p = plan(n_H, n_W, f, pad, dtype.name)
    k = p.n_h * p.n_l
    W_big = _spectral_weights(W.astype(dtype, copy=False), p.taps, k)
    x = np.asarray(A_prev, dtype=dtype)
    # along the width, then the height: cos and sin parts, combined into re and im
    rows = np.matmul(p.along_w, x.reshape(m * n_H, n_W, c_prev))  # (m*H, 2L, C)
    parts = np.matmul(p.along_h, rows.reshape(m, n_H, -1)).reshape(m, 2, p.n_h, p.n_l, 2, c_prev)
    X = np.empty((m, p.n_h, p.n_l, 2, c_prev), dtype=dtype)
    np.add(parts[:, 0, ..., 0, :], parts[:, 1, ..., 1, :], out=X[..., 0, :])
    np.subtract(parts[:, 0, ..., 1, :], parts[:, 1, ..., 0, :], out=X[..., 1, :])
    # (m, K, 2*C_prev) read as (K, m, 2*C_prev): [Xr Xi] per frequency, a strided view, no copy
    X_big = X.reshape(m, k, 2 * c_prev).transpose(1, 0, 2)
    Y = np.empty((m, k, 2 * c), dtype=dtype)
    np.matmul(X_big, W_big, out=Y.transpose(1, 0, 2))
    # back along the height (complex), then along the width to real outputs
    parts = np.matmul(p.back_h, Y.reshape(m, p.n_h, -1)).reshape(m, 2, p.n_Ho, p.n_l, 2, c)
    half = np.empty((m, p.n_Ho, p.n_l, 2, c), dtype=dtype)
    np.subtract(parts[:, 0, ..., 0, :], parts[:, 1, ..., 1, :], out=half[..., 0, :])
    np.add(parts[:, 0, ..., 1, :], parts[:, 1, ..., 0, :], out=half[..., 1, :])
    Z = np.matmul(p.back_w, half.reshape(m * p.n_Ho, 2 * p.n_l, c))
    Z += np.asarray(b, dtype=dtype).reshape(c)
    return Z.reshape(m, p.n_Ho, p.n_Wo, c), (A_prev, W, b, hparameters, (X_big, W_big))


def conv_backward(dZ: np.ndarray, cache, compute_dA: bool = True):
    """``(dA_prev, dW, db)`` for a cache from this module's ``conv_forward``: the forward's
    steps in reverse, each with its matrix transposed."""
    A_prev, W, b, hparameters, (X_big, W_big) = cache
    m, n_H, n_W, c_prev = A_prev.shape
    f, _, _, c = W.shape
    pad = int(hparameters["pad"])
    dtype = W_big.dtype
    p = plan(n_H, n_W, f, pad, dtype.name)
    k = p.n_h * p.n_l
    if np.shape(dZ) != (m, p.n_Ho, p.n_Wo, c):
        raise ValueError(f"dZ must have the forward output's shape {(m, p.n_Ho, p.n_Wo, c)}, got {np.shape(dZ)}")
    dZ = np.asarray(dZ, dtype=dtype)
    db = F.column_sums(dZ.reshape(-1, c)).reshape(1, 1, 1, c)
    d_half = np.matmul(p.back_w.T, dZ.reshape(m * p.n_Ho, p.n_Wo, c)).reshape(m, p.n_Ho, p.n_l, 2, c)
    d_parts = _parts_gradient(d_half, sign_on_real=True)
    dY = np.matmul(p.back_h.T, d_parts.reshape(m, 2 * p.n_Ho, -1))  # (m, Nh, L*2*C)
    dY_big = dY.reshape(m, k, 2 * c).transpose(1, 0, 2)  # (K, m, 2C): [dYr dYi]
    dW_big = np.matmul(X_big.transpose(0, 2, 1), dY_big)  # (K, 2*C_prev, 2*C)
    dWf = np.empty((k, 2, c_prev, c), dtype=dtype)
    np.add(dW_big[:, :c_prev, :c], dW_big[:, c_prev:, c:], out=dWf[:, 0])
    np.subtract(dW_big[:, :c_prev, c:], dW_big[:, c_prev:, :c], out=dWf[:, 1])
    dW = (p.taps.T @ dWf.reshape(2 * k, c_prev * c)).reshape(f, f, c_prev, c)
    if not compute_dA:
        return None, dW, db
    dX = np.empty((m, k, 2 * c_prev), dtype=dtype)
    np.matmul(dY_big, W_big.transpose(0, 2, 1), out=dX.transpose(1, 0, 2))
    d_parts = _parts_gradient(dX.reshape(m, p.n_h, p.n_l, 2, c_prev), sign_on_real=False)
    d_rows = np.matmul(p.along_h.T, d_parts.reshape(m, 2 * p.n_h, -1))  # (m, H, 2L*C_prev)
    dA_prev = np.matmul(p.along_w.T, d_rows.reshape(m * n_H, 2 * p.n_l, c_prev))
    return dA_prev.reshape(m, n_H, n_W, c_prev), dW, db


def _parts_gradient(d_complex: np.ndarray, sign_on_real: bool) -> np.ndarray:
    """Gradient of the (cos, sin) parts from that of the combined (re, im).

    Forward:  re = cos.re + sin.im,  im = cos.im - sin.re  (``sign_on_real`` False), or
              re = cos.re - sin.im,  im = cos.im + sin.re  (True, the inverse transform).
    So the cos part's gradient is (d_re, d_im) and the sin part's is (-d_im, d_re) or (d_im, -d_re).
    """
    shape = d_complex.shape
    out = np.empty((shape[0], 2) + shape[1:], dtype=d_complex.dtype)
    out[:, 0] = d_complex
    re, im = d_complex[..., 0, :], d_complex[..., 1, :]
    if sign_on_real:
        out[:, 1, ..., 0, :] = im
        np.negative(re, out=out[:, 1, ..., 1, :])
    else:
        np.negative(im, out=out[:, 1, ..., 0, :])
        out[:, 1, ..., 1, :] = re
    return out
