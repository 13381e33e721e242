"""Convolution in the frequency domain, with the DFT written as real float32 matrix products.

Stands in for ``functional.conv_forward``, ``conv_weight_gradients`` and ``conv_input_gradient``
(stride 1, pad < f). For a conv with many channels (LeNet's 5x5x32x64) it needs about a quarter
of im2col's multiply-adds (``estimated_macs``), and its backward pass is a few GEMMs instead of
col2im's f*f thin GEMMs and scatter-adds:

1. The half spectrum of every image and channel on an ``(H + pad) x (W + pad)`` grid, large
   enough for the circular wrap-around of a DFT to land only on the zero padding: one real
   transform along the height (to the half spectrum: a real input's is symmetric), then a
   complex one along the width.
2. Per frequency ``k``, a complex channel product ``Y[k] = X[k] @ Wf[k]``, written as one real
   GEMM ``[Xr Xi] @ [[Wr, Wi], [-Wi, Wr]]`` batched over the frequencies.
3. The inverse transform along the width, then along the height, evaluated only at the
   output positions.

Why the same sums: a convolution is a product of spectra (the convolution theorem), and with
no wrap-around into the outputs that is the plain conv's sum of taps times pixels, in exact
arithmetic; in float32 it rounds differently (tests/engine/test_fftconv.py compares them).
Every step is a real linear map, so the backward pass is the same steps in reverse with the
matrices transposed: the exact gradient of this forward, not an approximation. numpy.fft is
not used: at these sizes its per-call overhead loses to a few float32 GEMMs.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from .. import functional as F
from . import kernels


class DftMatrices(NamedTuple):
    half_h: np.ndarray  # (2Lh, H):      image rows -> half spectrum along the height
    full_w: np.ndarray  # (2Nw, 2W):     complex columns -> full spectrum along the width
    back_w: np.ndarray  # (2Wo, 2Nw):    spectrum -> complex output columns
    back_h: np.ndarray  # (Ho, 2Lh):     half spectrum -> real output rows
    taps: np.ndarray    # (2K, f*f):     kernel taps -> spectrum
    grad_taps: np.ndarray  # (f*f, 4K):  X^T [dYr dYi] per frequency -> kernel gradient
    n_lh: int
    n_w: int
    n_Ho: int
    n_Wo: int


def grid_size(n: int, f: int, pad: int) -> int:
    """DFT length along one axis: the smallest with no wrap-around into the wanted outputs."""
    return max(n + pad, f)


def frequency_grid(n_H: int, n_W: int, f: int, pad: int) -> tuple[int, int, int]:
    """``(n_h, n_w, n_lh)``: the DFT grid, and the rows of its half spectrum along the height (a
    real input's spectrum is symmetric: n_h // 2 + 1 of its n_h rows are enough). The spectra
    hold ``n_lh * n_w`` frequencies."""
    n_h = grid_size(n_H, f, pad)
    return n_h, grid_size(n_W, f, pad), n_h // 2 + 1


def supported(n_H: int, n_W: int, f: int, stride: int, pad: int) -> bool:
    """Stride 1, and every output position fits on the grid (pad < f)."""
    return stride == 1 and pad < f and F.output_size(n_H, f, 1, pad) >= 1 and F.output_size(n_W, f, 1, pad) >= 1


def estimated_macs(n_H: int, n_W: int, c_prev: int, c: int, f: int, pad: int) -> int:
    """Multiply-adds of one forward pass per image: the four axis transforms and the products."""
    _, n_w, n_lh = frequency_grid(n_H, n_W, f, pad)
    n_Ho, n_Wo = F.output_size(n_H, f, 1, pad), F.output_size(n_W, f, 1, pad)
    forward = 2 * n_lh * n_H * n_W * c_prev + n_lh * 2 * n_w * 2 * n_W * c_prev
    inverse = n_lh * 2 * n_Wo * 2 * n_w * c + n_Ho * 2 * n_lh * n_Wo * c
    return forward + 4 * n_lh * n_w * c_prev * c + inverse


def spectrum_values(n_H: int, n_W: int, c_prev: int, c: int, f: int, pad: int) -> int:
    """Numbers per image in the input's and output's spectra (the forward pass's scratch)."""
    _, n_w, n_lh = frequency_grid(n_H, n_W, f, pad)
    return 2 * n_lh * n_w * (c_prev + c)


def window_major(n: int) -> np.ndarray:
    """Output rows (or columns) in 2x2-pooling-window order: the even ones, then the odd ones,
    up to the last whole window (a pool drops a last odd row)."""
    return np.concatenate([np.arange(0, n - 1, 2), np.arange(1, n, 2)])


@lru_cache(maxsize=64)
def dft_matrices(n_H: int, n_W: int, f: int, pad: int, dtype_name: str, pooled: bool = False) -> DftMatrices:
    """The DFT matrices of one layer geometry, each a real matrix acting on one axis.

    The half spectrum is taken along the height (first forward, last inverse step) and the
    full complex one along the width, with real and imaginary parts ordered so that each
    step's output is already the next step's input: no pass over memory to rearrange them.
    A frequency (kh, kw) of image b holds [re(C_prev), im(C_prev)] contiguously, which is
    what the per-frequency channel products need.

    ``pooled``: the inverse steps produce the output rows and columns in ``window_major``
    order, for a 2x2 max pool to read as four blocks (the same numbers, reordered).
    """
    n_h, n_w, n_lh = frequency_grid(n_H, n_W, f, pad)
    n_Ho, n_Wo = F.output_size(n_H, f, 1, pad), F.output_size(n_W, f, 1, pad)
    out_rows, out_cols = (window_major(n_Ho), window_major(n_Wo)) if pooled else (np.arange(n_Ho), np.arange(n_Wo))
    n_Ho, n_Wo = len(out_rows), len(out_cols)

    def angles(out_index, in_index, n):
        return 2 * np.pi * np.outer(out_index, in_index) / n

    # rows (kh, re/im): e^{-i a} = cos a - i sin a
    a = angles(np.arange(n_lh), np.arange(n_H), n_h)
    half_h = np.stack([np.cos(a), -np.sin(a)], axis=1).reshape(2 * n_lh, n_H)
    # rows (kw, re/im), columns (re/im, w): multiply the complex columns by e^{-i a}
    a = angles(np.arange(n_w), np.arange(n_W), n_w)
    cos, sin = np.cos(a), np.sin(a)
    full_w = np.stack([np.stack([cos, sin], axis=1), np.stack([-sin, cos], axis=1)], axis=1)
    full_w = full_w.reshape(2 * n_w, 2 * n_W)
    # rows (re/im, j), columns (kw, re/im): multiply by e^{+i a}, only at the output columns
    a = angles(out_cols, np.arange(n_w), n_w)
    cos, sin = np.cos(a), np.sin(a)
    back_w = np.stack([np.stack([cos, -sin], axis=2), np.stack([sin, cos], axis=2)]).reshape(2 * n_Wo, 2 * n_w)
    # the real part along the height; rows other than 0 (and n_h/2) stand for their mirror too
    weight = np.full(n_lh, 2.0)
    weight[0] = 1.0
    if n_h % 2 == 0:
        weight[-1] = 1.0
    a = angles(out_rows, np.arange(n_lh), n_h)
    back_h = np.stack([np.cos(a) * weight, -np.sin(a) * weight], axis=2).reshape(n_Ho, 2 * n_lh) / (n_h * n_w)
    # kernel tap (a, b) sits at grid position (pad - a, pad - b); rows (kh, kw, re/im)
    tap = pad - np.arange(f)
    phase = angles(np.arange(n_lh), tap, n_h)[:, None, :, None] + angles(np.arange(n_w), tap, n_w)[None, :, None, :]
    taps = np.stack([np.cos(phase), -np.sin(phase)], axis=2).reshape(2 * n_lh * n_w, f * f)
    # The kernel gradient is sum_k Re(taps_k) (Xr'dYr + Xi'dYi) + Im(taps_k) (Xr'dYi - Xi'dYr).
    # Per frequency X^T [dYr dYi] holds the blocks [[Xr'dYr, Xr'dYi], [Xi'dYr, Xi'dYi]]; taken as
    # X^T dYr = [Xr'dYr; Xi'dYr] and X^T dYi = [Xr'dYi; Xi'dYi], one after the other, each block
    # gets its coefficient in one matrix and one GEMM adds them all.
    re, im = taps[0::2].T, taps[1::2].T  # (f*f, K)
    grad_taps = np.stack([np.stack([re, -im], axis=2), np.stack([im, re], axis=2)], axis=1).reshape(f * f, -1)
    dtype = np.dtype(dtype_name)
    arrays = (np.ascontiguousarray(m, dtype=dtype) for m in (half_h, full_w, back_w, back_h, taps, grad_taps))
    return DftMatrices(*arrays, n_lh=n_lh, n_w=n_w, n_Ho=n_Ho, n_Wo=n_Wo)


class SpectralWeights(NamedTuple):
    """A layer's kernels in the frequency domain. They change only when the weights do, so one
    copy serves every part of a batch (and every batch of an evaluation)."""
    blocks: np.ndarray              # (K, 2*C_prev, 2*C): [[Wr, Wi], [-Wi, Wr]] per frequency
    blocks_t: np.ndarray | None     # (K, 2*C, 2*C_prev): its transpose, contiguous, for the input gradient


def spectral_weights(W: np.ndarray, n_H: int, n_W: int, pad: int, with_transpose=True) -> SpectralWeights:
    """The spectral weights of ``W`` for an ``n_H x n_W`` input."""
    weights = empty_spectral_weights(W, n_H, n_W, pad, with_transpose)
    fill_spectral_weights(weights, W, n_H, n_W, pad, 0, len(weights.blocks))
    return weights


def empty_spectral_weights(W: np.ndarray, n_H: int, n_W: int, pad: int, with_transpose=True) -> SpectralWeights:
    """Room for the spectral weights of ``W``, one block per frequency."""
    f, _, c_prev, c = W.shape
    dft = dft_matrices(n_H, n_W, f, pad, W.dtype.name)
    k = dft.n_lh * dft.n_w
    blocks_t = np.empty((k, 2 * c, 2 * c_prev), dtype=W.dtype) if with_transpose else None
    return SpectralWeights(np.empty((k, 2 * c_prev, 2 * c), dtype=W.dtype), blocks_t)


def fill_spectral_weights(weights: SpectralWeights, W: np.ndarray, n_H: int, n_W: int, pad: int,
                          lo: int, hi: int) -> None:
    """Fill in the blocks of frequencies ``lo..hi-1`` (so that threads can share the work)."""
    f, _, c_prev, c = W.shape
    dft = dft_matrices(n_H, n_W, f, pad, W.dtype.name)
    Wf = (dft.taps[2 * lo:2 * hi] @ W.reshape(f * f, c_prev * c)).reshape(hi - lo, 2, c_prev, c)
    part = weights.blocks[lo:hi]
    part[:, :c_prev, :c] = Wf[:, 0]
    part[:, :c_prev, c:] = Wf[:, 1]
    np.negative(Wf[:, 1], out=part[:, c_prev:, :c])
    part[:, c_prev:, c:] = Wf[:, 0]
    if weights.blocks_t is not None:
        weights.blocks_t[lo:hi] = part.transpose(0, 2, 1)


def conv_forward(A_prev: np.ndarray, W: np.ndarray, b: np.ndarray, hparameters: dict,
                 weights: SpectralWeights | None = None, pooled: bool = False):
    """Same contract as ``functional.conv_forward`` (stride 1, pad < f); the cache's last entry
    is ``(input spectrum, spectral weights, pooled)`` for the backward pass. ``weights``, when
    given, must be ``spectral_weights(W, ...)`` for this input size (computed here otherwise).
    ``pooled``: the output's rows and columns come in ``window_major`` order (for ``convpool``;
    the backward pass then takes its gradient in that order too)."""
    F.require_4d("A_prev", A_prev)
    m, n_H, n_W, c_prev = A_prev.shape
    f, _, _, c = W.shape
    stride, pad = int(hparameters["stride"]), int(hparameters["pad"])
    if not supported(n_H, n_W, f, stride, pad):
        raise ValueError(f"the frequency-domain conv needs stride 1 and pad < f; got stride {stride}, pad {pad}, f {f}")
    dtype = F.floating_dtype(A_prev, W, b)
    dft = dft_matrices(n_H, n_W, f, pad, dtype.name, pooled)
    k = dft.n_lh * dft.n_w
    if weights is None or weights.blocks.dtype != dtype:
        weights = spectral_weights(W.astype(dtype, copy=False), n_H, n_W, pad, with_transpose=False)
    x = np.asarray(A_prev, dtype=dtype)
    rows = np.matmul(dft.half_h, x.reshape(m, n_H, n_W * c_prev))  # (m, Lh, re/im, W, C)
    X = np.matmul(dft.full_w, rows.reshape(m * dft.n_lh, 2 * n_W, c_prev))  # (m, Lh, Nw, re/im, C)
    # (m, K, 2*C_prev) read as (K, m, 2*C_prev): [Xr Xi] per frequency, a strided view, no copy
    X_spectrum = X.reshape(m, k, 2 * c_prev).transpose(1, 0, 2)
    Y = np.empty((m, k, 2 * c), dtype=dtype)
    np.matmul(X_spectrum, weights.blocks, out=Y.transpose(1, 0, 2))
    cols = np.matmul(dft.back_w, Y.reshape(m * dft.n_lh, 2 * dft.n_w, c))  # (m, Lh, re/im, Wo, C)
    Z = np.matmul(dft.back_h, cols.reshape(m, 2 * dft.n_lh, dft.n_Wo * c)).reshape(m, dft.n_Ho, dft.n_Wo, c)
    if b is not None:
        Z += np.asarray(b, dtype=dtype).reshape(c)
    return Z, (A_prev, W, b, hparameters, (X_spectrum, weights, pooled))


def output_spectrum_gradient(dZ: np.ndarray, cache) -> np.ndarray:
    """The gradient at the output spectrum ``Y``: the two inverse transforms, transposed.
    ``(K, m, 2C)``, ``[dYr dYi]`` per frequency, which both gradients below start from: the
    frequency domain's first step of ``F.conv_backward``, which has no plain counterpart alone."""
    A_prev, W, _, hparameters, (_, weights, pooled) = cache
    m, n_H, n_W, _ = A_prev.shape
    f, _, _, c = W.shape
    dtype = weights.blocks.dtype
    dft = dft_matrices(n_H, n_W, f, int(hparameters["pad"]), dtype.name, pooled)
    if np.shape(dZ) != (m, dft.n_Ho, dft.n_Wo, c):
        raise ValueError(f"dZ must have the forward output's shape {(m, dft.n_Ho, dft.n_Wo, c)}, got {np.shape(dZ)}")
    dZ = np.asarray(dZ, dtype=dtype)
    d_cols = np.matmul(dft.back_h.T, dZ.reshape(m, dft.n_Ho, dft.n_Wo * c))
    dY = np.matmul(dft.back_w.T, d_cols.reshape(m * dft.n_lh, 2 * dft.n_Wo, c))  # (m, Lh, Nw, re/im, C)
    return dY.reshape(m, dft.n_lh * dft.n_w, 2 * c).transpose(1, 0, 2)


def weight_gradients(dZ: np.ndarray, dY: np.ndarray, cache):
    """``(dW, db)`` from the output gradient ``dZ`` and its spectrum ``dY``: equals
    ``F.conv_weight_gradients``."""
    A_prev, W, _, hparameters, (X_spectrum, weights, pooled) = cache
    f, _, c_prev, c = W.shape
    k = X_spectrum.shape[0]
    dft = dft_matrices(A_prev.shape[1], A_prev.shape[2], f, int(hparameters["pad"]), X_spectrum.dtype.name, pooled)
    db = kernels.column_sums(np.asarray(dZ, dtype=X_spectrum.dtype).reshape(-1, c)).reshape(1, 1, 1, c)
    # X^T dYr and X^T dYi, each (K, 2*C_prev, C), one after the other: see dft_matrices' grad_taps
    X_t = X_spectrum.transpose(0, 2, 1)
    products = np.empty((2, k, 2 * c_prev, c), dtype=X_spectrum.dtype)
    np.matmul(X_t, dY[:, :, :c], out=products[0])
    np.matmul(X_t, dY[:, :, c:], out=products[1])
    return (dft.grad_taps @ products.reshape(4 * k, c_prev * c)).reshape(f, f, c_prev, c), db


def input_gradient(dY: np.ndarray, cache) -> np.ndarray:
    """``dA_prev`` from the output spectrum's gradient: the channel products and the two
    forward transforms, transposed. Equals ``F.conv_input_gradient``."""
    A_prev, W, _, hparameters, (_, weights, pooled) = cache
    m, n_H, n_W, c_prev = A_prev.shape
    dtype = weights.blocks.dtype
    dft = dft_matrices(n_H, n_W, W.shape[0], int(hparameters["pad"]), dtype.name, pooled)
    dX = np.empty((m, dY.shape[0], 2 * c_prev), dtype=dtype)
    # a contiguous transpose: BLAS multiplies by a transposed operand more slowly here
    blocks_t = weights.blocks_t
    if blocks_t is None:
        blocks_t = np.ascontiguousarray(weights.blocks.transpose(0, 2, 1))
    np.matmul(dY, blocks_t, out=dX.transpose(1, 0, 2))
    d_rows = np.matmul(dft.full_w.T, dX.reshape(m * dft.n_lh, 2 * dft.n_w, c_prev))  # (m, Lh, re/im, W, C)
    dA_prev = np.matmul(dft.half_h.T, d_rows.reshape(m, 2 * dft.n_lh, n_W * c_prev))
    return dA_prev.reshape(m, n_H, n_W, c_prev)
