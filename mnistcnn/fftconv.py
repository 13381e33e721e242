"""Convolution in the frequency domain, with the 2-D DFT written as real matrix products.

For a stride-1 convolution with many channels (LeNet's 5x5x32x64) this does about half the
work of im2col and, above all, replaces the backward pass's 25 scatter-adds with GEMMs:

1. ``Xf = D @ x``: the half spectrum (real and imaginary parts interleaved per frequency) of
   every image and channel on an ``(H + pad) x (W + pad)`` grid. That grid is large enough
   for the circular wrap-around of a DFT to land only on the zero padding.
2. Per frequency ``k``, a complex channel product ``Y[k] = X[k] @ Wf[k]``, written as one real
   GEMM ``[Xr Xi] @ [[Wr, Wi], [-Wi, Wr]]`` batched over the frequencies.
3. ``y = G @ Yf``: the inverse DFT, evaluated only at the output positions.

Every step is a real linear map, so the backward pass is the same three steps with the
matrices transposed: it is exact, not an approximation of the adjoint. numpy.fft is not used:
at these sizes its per-call overhead loses to a few float32 GEMMs.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import functional as F


def grid_size(n: int, f: int, pad: int) -> int:
    """DFT length along one axis: the smallest with no wrap-around into the wanted outputs."""
    return max(n + pad, f)


def supported(n_H: int, n_W: int, f: int, stride: int, pad: int) -> bool:
    """Stride 1, and every output position fits on the grid (pad < f)."""
    return stride == 1 and pad < f and F.output_size(n_H, f, 1, pad) >= 1 and F.output_size(n_W, f, 1, pad) >= 1


def estimated_macs(n_H: int, n_W: int, c_prev: int, c: int, f: int, pad: int) -> int:
    """Multiply-adds of one forward pass per image (transforms, products, inverse)."""
    freqs = grid_size(n_H, f, pad) * (grid_size(n_W, f, pad) // 2 + 1)
    out = F.output_size(n_H, f, 1, pad) * F.output_size(n_W, f, 1, pad)
    return 2 * freqs * n_H * n_W * c_prev + 4 * freqs * c_prev * c + out * 2 * freqs * c


@lru_cache(maxsize=64)
def plan(n_H: int, n_W: int, f: int, pad: int, dtype_name: str):
    """The three real DFT matrices for one layer geometry: ``(D, Dw, G, frequencies)``.

    D  (2K, H*W):   image positions -> half spectrum, (re, im) interleaved per frequency;
    Dw (2K, f*f):   kernel taps -> the same spectrum (tap (a, b) sits at grid (pad-a, pad-b));
    G  (Ho*Wo, 2K): half spectrum -> the output positions, a real inverse DFT.
    """
    n_h, n_w = grid_size(n_H, f, pad), grid_size(n_W, f, pad)
    n_l = n_w // 2 + 1  # the half spectrum along the width: a real input's DFT is symmetric
    k = n_h * n_l
    n_Ho, n_Wo = F.output_size(n_H, f, 1, pad), F.output_size(n_W, f, 1, pad)

    def forward_dft(n, positions, count):
        return np.exp(-2j * np.pi * np.outer(np.arange(count), positions % n) / n)

    def interleave(complex_rows):  # (K, m) complex -> (2K, m) real, rows re0, im0, re1, ...
        return np.stack([complex_rows.real, complex_rows.imag], axis=1).reshape(2 * k, -1)

    D = interleave(np.einsum("kh,lw->klhw", forward_dft(n_h, np.arange(n_H), n_h),
                             forward_dft(n_w, np.arange(n_W), n_l)).reshape(k, n_H * n_W))
    taps = pad - np.arange(f)
    Dw = interleave(np.einsum("ka,lb->klab", forward_dft(n_h, taps, n_h),
                              forward_dft(n_w, taps, n_l)).reshape(k, f * f))
    # Inverse from the half spectrum: the columns other than 0 (and n_w/2) stand for two.
    weight = np.full(n_l, 2.0)
    weight[0] = 1.0
    if n_w % 2 == 0:
        weight[-1] = 1.0
    rows = np.exp(2j * np.pi * np.outer(np.arange(n_Ho), np.arange(n_h)) / n_h)
    cols = np.exp(2j * np.pi * np.outer(np.arange(n_Wo), np.arange(n_l)) / n_w) * weight
    E = np.einsum("ik,jl->ijkl", rows, cols).reshape(n_Ho * n_Wo, k) / (n_h * n_w)
    G = np.stack([E.real, -E.imag], axis=2).reshape(n_Ho * n_Wo, 2 * k)
    dtype = np.dtype(dtype_name)
    return tuple(np.ascontiguousarray(m, dtype=dtype) for m in (D, Dw, G)) + (k,)


def _spectral_weights(W: np.ndarray, Dw: np.ndarray, k: int) -> np.ndarray:
    """``[[Wr, Wi], [-Wi, Wr]]`` per frequency, shape (K, 2*C_prev, 2*C)."""
    f, _, c_prev, c = W.shape
    Wf = (Dw @ W.reshape(f * f, c_prev * c)).reshape(k, 2, c_prev, c)
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
    D, Dw, G, k = plan(n_H, n_W, f, pad, dtype.name)
    x = np.asarray(A_prev, dtype=dtype).reshape(m, n_H * n_W, c_prev)
    W_big = _spectral_weights(W.astype(dtype, copy=False), Dw, k)
    # (m, 2K, C_prev) read as (K, m, 2*C_prev): [Xr Xi] per frequency, a strided view, no copy
    X_big = np.matmul(D, x).reshape(m, k, 2 * c_prev).transpose(1, 0, 2)
    Y = np.empty((m, k, 2 * c), dtype=dtype)
    np.matmul(X_big, W_big, out=Y.transpose(1, 0, 2))
    Z = np.matmul(G, Y.reshape(m, 2 * k, c))
    Z += np.asarray(b, dtype=dtype).reshape(c)
    n_Ho, n_Wo = F.output_size(n_H, f, 1, pad), F.output_size(n_W, f, 1, pad)
    return Z.reshape(m, n_Ho, n_Wo, c), (A_prev, W, b, hparameters, (X_big, W_big))


def conv_backward(dZ: np.ndarray, cache, compute_dA: bool = True):
    """``(dA_prev, dW, db)`` for a cache from this module's ``conv_forward``."""
    A_prev, W, b, hparameters, (X_big, W_big) = cache
    m, n_H, n_W, c_prev = A_prev.shape
    f, _, _, c = W.shape
    pad = int(hparameters["pad"])
    n_Ho, n_Wo = F.output_size(n_H, f, 1, pad), F.output_size(n_W, f, 1, pad)
    if np.shape(dZ) != (m, n_Ho, n_Wo, c):
        raise ValueError(f"dZ must have the forward output's shape {(m, n_Ho, n_Wo, c)}, got {np.shape(dZ)}")
    dtype = W_big.dtype
    D, Dw, G, k = plan(n_H, n_W, f, pad, dtype.name)
    dZ = np.asarray(dZ, dtype=dtype).reshape(m, n_Ho * n_Wo, c)
    db = dZ.sum(axis=(0, 1)).reshape(1, 1, 1, c)
    dY_big = np.matmul(G.T, dZ).reshape(m, k, 2 * c).transpose(1, 0, 2)  # (K, m, 2C): [dYr dYi]
    dW_big = np.matmul(X_big.transpose(0, 2, 1), dY_big)  # (K, 2*C_prev, 2*C)
    dWf = np.empty((k, 2, c_prev, c), dtype=dtype)
    np.add(dW_big[:, :c_prev, :c], dW_big[:, c_prev:, c:], out=dWf[:, 0])
    np.subtract(dW_big[:, :c_prev, c:], dW_big[:, c_prev:, :c], out=dWf[:, 1])
    dW = (Dw.T @ dWf.reshape(2 * k, c_prev * c)).reshape(f, f, c_prev, c)
    if not compute_dA:
        return None, dW, db
    dX = np.empty((m, k, 2 * c_prev), dtype=dtype)
    np.matmul(dY_big, W_big.transpose(0, 2, 1), out=dX.transpose(1, 0, 2))
    dA_prev = np.matmul(D.T, dX.reshape(m, 2 * k, c_prev))
    return dA_prev.reshape(m, n_H, n_W, c_prev), dW, db
