"""A convolution and the max pool after it, computed together.

Apart, the convolution writes its output in image order (LeNet's first: 28x28x32 per image),
the pool reads it through strided slices and its backward writes a gradient of the same size
through as many more, with only ``C`` contiguous numbers per step of NumPy's inner loop.
Together, the convolution produces its output ordered by the parity of its row and column
(four phases), so that each offset of a stride-2 pool's window reads one phase, shifted by
whole rows and columns: a 2x2 pool is three element-wise maxima of four blocks and its
backward four block products; an overlapping 3x3 pool (the seed notebook's) takes nine
blocks, and its backward adds them in window-offset order, as ``functional.pool_backward``.

- a one-channel first conv (im2col): its GEMM rows are ordered (row parity, column parity,
  image, row, column), each phase one contiguous block; 2x2 and 3x3 pools. The GEMMs read
  shifted blocks of the images (``shifted_blocks``), directly where the kernel is large against
  the stride (``reads_blocks``), else through a column matrix made from them. With few filters
  the phases are channel-first instead (``channels_first``): one GEMM for all four, rows (row
  parity, column parity, channel), columns (row, column, image), so that a window offset's
  block is whole runs of rows times images, even where an overlapping pool drops a row;
- a frequency-domain conv (``fftconv``): the inverse transforms' rows are reordered so that
  even output rows and columns come before odd ones (blocks with ``w*C`` contiguous numbers);
  2x2 pools.

An unfused one-channel conv (a first conv with batchnorm after it) gets its column matrix from
here too (``one_channel_columns``): one slice copy per kernel offset.

Stands in for ``functional.conv_forward`` then ``functional.pool_forward`` (max mode), and
back, ``functional.pool_backward`` then ``conv_weight_gradients`` (a fused im2col conv is a
first layer: no input gradient) or fftconv's backward. The forward values are those of the
separate conv and pool: each output is the same dot product (computed by GEMMs of other shapes,
so equal within float32 rounding), and the bias is added after the max, which rounding cannot
change, as it is monotone. Gradients are the same sums taken in another order
(tests/engine/test_convpool.py).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import fftconv, kernels
from .. import functional as F


class Cache(NamedTuple):
    conv_input: object    # the conv's input as its backward reads it: im2col's shifted blocks or column
    #                       matrix; fft-gemm: fftconv's cache (the input, the weights, their spectra)
    Z: np.ndarray         # the convolution without bias, in phase order
    blocks: tuple         # views of Z, one per window offset, in row-major window order
    pooled: np.ndarray    # their maximum, no bias
    shape: tuple          # (f, m, h, w, C): kernel and pooled output
    pool: int             # the pool's window: 2, or 3 (overlapping)
    stride: int           # the conv's
    channels_first: bool = False  # Z (row parity, column parity, C, rows, columns, m): see channels_first


def supported(input_shape, kernel: int, stride: int, pad: int, pool_size: int, pool_stride: int,
              algorithm: str = "im2col") -> bool:
    """A 2x2 or 3x3 stride-2 pool that fits the conv's output; im2col: a one-channel input,
    and for a 3x3 pool an even conv output (its phases then have equal sizes); fft-gemm: a 2x2
    pool and what ``fftconv`` supports."""
    n_H_prev, n_W_prev, c_prev = input_shape
    n_H, n_W = (F.output_size(n, kernel, stride, pad) for n in (n_H_prev, n_W_prev))
    if pool_size not in (2, 3) or pool_stride != 2 or n_H < pool_size or n_W < pool_size:
        return False
    if algorithm == "fft-gemm":
        return pool_size == 2 and fftconv.supported(n_H_prev, n_W_prev, kernel, stride, pad)
    return c_prev == 1 and (pool_size == 2 or n_H % 2 == n_W % 2 == 0)


# A one-channel conv with at most this many filters computes its phases channel-first: a GEMM
# output only C numbers wide leaves most of BLAS's kernel idle, while (4C, n*n) @ (n*n,
# positions) fills it; the pooled output is then transposed, a quarter of Z or less.
THIN_FILTERS = 12


def channels_first(c: int) -> bool:
    """Whether a one-channel fused conv with ``c`` filters computes its phases channel-first."""
    return c <= THIN_FILTERS


def phase_size(h: int, w: int, pool: int) -> tuple[int, int]:
    """Rows and columns of each of the four phases of a conv output that a stride-2 pool of size
    ``pool`` (2 or 3) reads for ``h`` x ``w`` outputs: window offset u reads its phase shifted by
    u // 2 rows (``window_blocks``), so a 3x3 pool needs one row and column more."""
    return h + pool - 2, w + pool - 2


def max_of_blocks(blocks, out=None) -> np.ndarray:
    pooled = np.maximum(blocks[0], blocks[1], out=out)
    for block in blocks[2:]:
        np.maximum(pooled, block, out=pooled)
    return pooled


def first_max_masks(windows: list, maximum: np.ndarray):
    """``functional.first_max_masks`` (each window's gradient to its first maximum) with two
    operations fewer per window: the first offset's mask starts the bookkeeping, and the last
    offset takes the windows left, without comparing (finite windows have their maximum somewhere)."""
    unclaimed = None  # windows whose first maximum is still to come (None: all of them)
    for k, window in enumerate(windows):
        if k == len(windows) - 1 and unclaimed is not None:
            yield unclaimed
            return
        first = window == maximum
        if unclaimed is None:
            unclaimed = ~first
        else:
            first &= unclaimed
            unclaimed ^= first
        yield first


def route_to_first_max(d_pooled: np.ndarray, blocks, pooled: np.ndarray, d_blocks, overlapping: bool) -> None:
    """Send each pooled gradient to the first maximum of its window in row-major order
    (PyTorch's rule, as ``functional.pool_backward``) through ``d_blocks``, views of the conv's
    gradient: written, or added in window-offset order when windows overlap (the views then
    start at zero)."""
    routed = np.empty_like(d_pooled) if overlapping else None
    for first, d_block in zip(first_max_masks(blocks, pooled), d_blocks):
        if overlapping:
            np.add(d_block, np.multiply(d_pooled, first, out=routed), out=d_block)
        else:
            np.multiply(d_pooled, first, out=d_block)


def window_blocks(Z: np.ndarray, pool: int, h: int, w: int) -> tuple:
    """The views ``(m, h, w, C)`` of an im2col conv's phase-ordered output ``Z`` (row parity,
    column parity, m, rows, columns, C), one per offset (u, v) of a stride-2 pool's window, in
    row-major order: offset u reads row parity u % 2, shifted by u // 2 rows. Channel-first
    ``Z`` (row parity, column parity, C, rows, columns, m): views ``(C, h, w, m)``."""
    return tuple(Z[u % 2, v % 2, :, u // 2:u // 2 + h, v // 2:v // 2 + w] for u in range(pool) for v in range(pool))


def shifted_blocks(A_pad: np.ndarray, f: int, stride: int, h: int, w: int, batch_last: bool = False) -> np.ndarray:
    """``(n*n, m*h*w)`` with n = f + stride: block (u, v) holds pixel (u + 2*stride*i,
    v + 2*stride*j) of every image for every position (i, j) of the conv output's phases
    (``h`` x ``w`` each). Tap (a, b) of the conv output in phase (r, q) reads block
    (a + stride*r, b + stride*q): these n*n blocks are all the input the conv reads (LeNet: 36,
    against 4*25 tap-phase pairs). One strided copy from ``A_pad`` (m, H, W, 1). ``batch_last``:
    from ``A_pad`` (H, W, m), each block's columns ordered (i, j, image), runs of m numbers."""
    n = f + stride
    if batch_last:
        s_h, s_w, s_m = A_pad.strides
        shape, strides = (n, n, h, w, A_pad.shape[2]), (s_h, s_w, 2 * stride * s_h, 2 * stride * s_w, s_m)
    else:
        s_m, s_h, s_w, _ = A_pad.strides
        shape, strides = (n, n, A_pad.shape[0], h, w), (s_h, s_w, s_m, 2 * stride * s_h, 2 * stride * s_w)
    view = as_strided(A_pad, shape, strides, writeable=False)
    blocks = np.empty(view.shape, dtype=A_pad.dtype)
    blocks[...] = view
    return blocks.reshape(n * n, -1)


def one_channel_columns(A_pad: np.ndarray, f: int, stride: int, n_H: int, n_W: int) -> np.ndarray:
    """``functional.im2col`` for a one-channel input (an unfused first conv), as the transposed
    view of ``(f*f, m*n_H*n_W)``: built by one slice copy per kernel offset (rows of n_W
    pixels), where im2col gathers runs of f pixels."""
    m = A_pad.shape[0]
    cols_t = np.empty((f * f, m, n_H, n_W), dtype=A_pad.dtype)
    for i in range(f):
        for j in range(f):
            cols_t[i * f + j] = A_pad[:, F.offset_slice(i, n_H, stride), F.offset_slice(j, n_W, stride), 0]
    return cols_t.reshape(f * f, m * n_H * n_W).T


def batch_last_padded(A_prev: np.ndarray, pad: int) -> np.ndarray:
    """A one-channel ``A_prev`` (m, H, W, 1) zero-padded and transposed to (H, W, m)."""
    m, n_H, n_W, _ = A_prev.shape
    padded = np.zeros((n_H + 2 * pad, n_W + 2 * pad, m), dtype=A_prev.dtype)
    padded[pad:pad + n_H, pad:pad + n_W] = A_prev[..., 0].transpose(1, 2, 0)
    return padded


def pooled_columns(blocks: np.ndarray, f: int, stride: int) -> np.ndarray:
    """``(f*f, 4*rows)`` from ``shifted_blocks``: for tap (a, b), the input pixel under it at
    every conv output of the phases, ordered (row parity, column parity, image, row, column).
    Long contiguous copies, where gathering all 4*f*f blocks from the image would be many
    short ones."""
    n, rows = f + stride, blocks.shape[1]
    row, size = rows * blocks.itemsize, blocks.itemsize
    # tap (a, b) in phase (r, q) is block (a + stride*r, b + stride*q)
    by_tap = as_strided(blocks, (f, f, 2, 2, rows), (n * row, row, stride * n * row, stride * row, size),
                        writeable=False)
    cols = np.empty(by_tap.shape, dtype=blocks.dtype)
    cols[...] = by_tap
    return cols.reshape(f * f, 4 * rows)


def reads_blocks(f: int, stride: int) -> bool:
    """Whether a one-channel conv's GEMMs read the shifted blocks directly, with its taps
    spread among zeros (``padded_taps``), rather than a column matrix built from them: the
    columns take 4*f*f numbers per position where the blocks take (f + stride)**2, and the
    zeros add stride/f to the multiply-adds. Direct where those are at most a quarter more."""
    return 4 * stride <= f


def padded_taps(taps: np.ndarray, f: int, stride: int) -> list:
    """For column parity q, the ``(f*n, C)`` weights that phase (r, q) multiplies the blocks'
    rows ``block_rows(r)`` by: tap (a, t) at row a*n + t + stride*q, zeros elsewhere."""
    n, c = f + stride, taps.shape[1]
    weights = []
    for q in (0, 1):
        padded = np.zeros((f, n, c), dtype=taps.dtype)
        padded[:, stride * q:stride * q + f] = taps.reshape(f, f, c)
        weights.append(padded.reshape(f * n, c))
    return weights


def phase_taps(taps: np.ndarray, f: int, stride: int) -> np.ndarray:
    """``(4*C, n*n)``: row (r, q, c) holds filter c's taps where phase (r, q) reads the shifted
    blocks, tap (a, b) at block (a + stride*r, b + stride*q), zeros elsewhere."""
    n, c = f + stride, taps.shape[1]
    weights = np.zeros((2, 2, c, n, n), dtype=taps.dtype)
    by_filter = taps.T.reshape(c, f, f)
    for r in (0, 1):
        for q in (0, 1):
            weights[r, q, :, stride * r:stride * r + f, stride * q:stride * q + f] = by_filter
    return weights.reshape(4 * c, n * n)


def block_rows(blocks: np.ndarray, f: int, stride: int, r: int) -> np.ndarray:
    """The ``(f*n, positions)`` rows of ``shifted_blocks`` that the conv's row-parity-``r``
    phase reads: (a + stride*r)*n + v for tap row a, one contiguous range."""
    n = f + stride
    return blocks[stride * r * n:stride * r * n + f * n]


# Bytes of a slice of an evaluation's fused first conv: its blocks, its GEMM outputs and its
# pooled output stay in one core's L2 cache, where the bias and relu are added too. Small nets
# get more images per slice, so that NumPy's per-call cost is shared by more of them.
EVAL_SLICE_BYTES = 1_250_000


def eval_slice_images(shape: tuple, stride: int, pool: int, itemsize: int) -> int:
    """Images per slice of ``_pooled_without_cache`` (LeNet's first conv: 15)."""
    f, m, h, w, c = shape
    rows, columns = phase_size(h, w, pool)
    grid = rows * columns  # positions per phase
    # a 3x3 pool and channel-first phases keep all four phases
    gemm_out = 4 * grid * c if pool == 3 or channels_first(c) else h * w * c
    per_image = ((f + stride) ** 2 * grid + gemm_out + h * w * c) * itemsize
    return max(1, EVAL_SLICE_BYTES // per_image)


def _pooled_without_cache(A_pad, taps, bias, shape, stride, relu, pool):
    """The pooled conv without keeping anything, its GEMMs reading the shifted blocks directly
    (``padded_taps``: the zero terms add nothing to the sums), so no column matrix is built. A
    2x2 pool takes the phases into a running maximum as they come; a 3x3 pool keeps them, then
    takes its nine blocks. Slices of ``eval_slice_images`` images, each finished (bias, relu)
    while it is in cache."""
    f, m, h, w, c = shape
    rows, columns = phase_size(h, w, pool)
    grid = rows * columns  # values per phase of one image
    weights = padded_taps(taps, f, stride)
    pooled = np.empty((m * h * w, c), dtype=taps.dtype)
    per_slice = min(m, eval_slice_images(shape, stride, pool, taps.itemsize))
    phases = np.empty((2, 2, per_slice * grid, c), dtype=taps.dtype)
    # full-size operands: NumPy's add and maximum run faster on two whole arrays than on a
    # broadcast bias or a scalar 0 (the same numbers)
    bias = None if bias is None else np.broadcast_to(bias, (per_slice * h * w, c)).copy()
    zeros = np.zeros((per_slice * h * w, c), dtype=taps.dtype) if relu else None
    for lo in range(0, m, per_slice):
        hi = min(m, lo + per_slice)
        blocks = shifted_blocks(A_pad[lo:hi], f, stride, rows, columns)
        out = pooled[lo * h * w:hi * h * w]
        for r in (0, 1):
            reads = block_rows(blocks, f, stride, r).T
            for q in (0, 1):
                if pool == 2 and r == q == 0:
                    np.matmul(reads, weights[q], out=out)
                elif pool == 2:
                    np.matmul(reads, weights[q], out=phases[0, 0, :len(out)])
                    np.maximum(out, phases[0, 0, :len(out)], out=out)
                else:
                    np.matmul(reads, weights[q], out=phases[r, q, :(hi - lo) * grid])
        if pool == 3:
            Z = phases[:, :, :(hi - lo) * grid].reshape(2, 2, hi - lo, rows, columns, c)
            max_of_blocks(window_blocks(Z, pool, h, w), out=out.reshape(hi - lo, h, w, c))
        if bias is not None:
            np.add(out, bias[:len(out)], out=out)
        if relu:
            np.maximum(out, zeros[:len(out)], out=out)
    return pooled.reshape(m, h, w, c)


def _pooled_channel_first(A_prev, taps, bias, shape, stride, pad, relu, pool):
    """``_pooled_without_cache`` for channel-first phases: per slice, one GEMM for the four
    phases, the maximum of the window's blocks, bias and relu along whole channel rows, then
    the transpose into image order."""
    f, m, h, w, c = shape
    rows, columns = phase_size(h, w, pool)
    weights = phase_taps(taps, f, stride)
    pooled = np.empty((m, h, w, c), dtype=taps.dtype)
    per_slice = min(m, eval_slice_images(shape, stride, pool, taps.itemsize))
    phases = np.empty(4 * c * rows * columns * per_slice, dtype=taps.dtype)
    channel_rows = np.empty((c, h * w * per_slice), dtype=taps.dtype)
    # full-size operands, as in _pooled_without_cache
    bias = None if bias is None else np.broadcast_to(bias.reshape(c, 1), channel_rows.shape).copy()
    zeros = np.zeros_like(channel_rows) if relu else None
    for lo in range(0, m, per_slice):
        hi = min(m, lo + per_slice)
        size = h * w * (hi - lo)
        blocks = shifted_blocks(batch_last_padded(A_prev[lo:hi], pad), f, stride, rows, columns, batch_last=True)
        Z = np.matmul(weights, blocks, out=phases[:4 * c * blocks.shape[1]].reshape(4 * c, -1))
        out = channel_rows.reshape(-1)[:c * size].reshape(c, size)
        max_of_blocks(window_blocks(Z.reshape(2, 2, c, rows, columns, hi - lo), pool, h, w),
                      out=out.reshape(c, h, w, hi - lo))
        if bias is not None:
            np.add(out, bias[:, :size], out=out)
        if relu:
            np.maximum(out, zeros[:, :size], out=out)
        # through a transposed view, as in _biased: NumPy then reads whole rows
        np.copyto(pooled[lo:hi].transpose(3, 1, 2, 0), out.reshape(c, h, w, hi - lo))
    return pooled


def _pooled_shape(A_prev, W, hparameters, algorithm, pool=2):
    F.require_4d("A_prev", A_prev)
    m, n_H_prev, n_W_prev, c_prev = A_prev.shape
    f, _, _, c = W.shape
    stride, pad = int(hparameters["stride"]), int(hparameters["pad"])
    if W.shape[2] != c_prev or not supported((n_H_prev, n_W_prev, c_prev), f, stride, pad, pool, 2, algorithm):
        need = "stride 1 and pad < f" if algorithm == "fft-gemm" else "a one-channel input"
        even = ", an even conv output" if pool == 3 else ""
        raise ValueError(f"the fused {algorithm} conv and {pool}x{pool} pool needs {need}{even} and room for the "
                         f"pool; got input {A_prev.shape}, W {W.shape}, hparameters {hparameters}")
    h, w = (F.output_size(F.output_size(n, f, stride, pad), pool, 2) for n in (n_H_prev, n_W_prev))
    return f, m, h, w, c


def _biased(pooled, b, shape, in_channels_first=False):
    """The pooled output in image order ``(m, h, w, C)``, with the bias."""
    f, m, h, w, c = shape
    if in_channels_first:  # pooled (C, h, w, m), written through a transposed view: NumPy then reads whole rows
        out = np.empty((m, h, w, c), dtype=pooled.dtype)
        channel_order = out.transpose(3, 1, 2, 0)
        if b is None:
            np.copyto(channel_order, pooled)
        else:
            np.add(pooled, b.reshape(c, 1, 1, 1), out=channel_order)
        return out
    pooled = pooled.reshape(m, h, w, c)
    return pooled if b is None else pooled + np.asarray(b, dtype=pooled.dtype).reshape(c)


def conv_pool_forward(A_prev: np.ndarray, W: np.ndarray, b: np.ndarray | None, hparameters: dict,
                      training: bool = True, relu: bool = False, pool: int = 2):
    """``pool_forward(conv_forward(A_prev, W, b, hparameters), {"f": pool, "stride": 2})`` for
    a one-channel input (``pool`` 2 or 3): returns the pooled ``(m, h, w, C)`` and a ``Cache``
    (None when not ``training``: an evaluation needs no backward pass). W (f, f, 1, C).
    ``relu`` (an evaluation's only): the relu after the pool too."""
    shape = f, m, h, w, c = _pooled_shape(A_prev, W, hparameters, "im2col", pool)
    dtype = F.floating_dtype(A_prev, W, b)
    stride, pad = int(hparameters["stride"]), int(hparameters["pad"])
    A_prev = np.asarray(A_prev, dtype=dtype)
    taps = W.reshape(f * f, c).astype(dtype, copy=False)
    if not training:
        bias = None if b is None else np.asarray(b, dtype=dtype).reshape(c)
        if channels_first(c):
            return _pooled_channel_first(A_prev, taps, bias, shape, stride, pad, relu, pool), None
        return _pooled_without_cache(kernels.zero_pad(A_prev, pad), taps, bias, shape, stride, relu, pool), None
    if relu:
        raise ValueError("relu is fused only in an evaluation (training=False): training needs its mask")
    rows, columns = phase_size(h, w, pool)
    if channels_first(c):
        conv_input = shifted_blocks(batch_last_padded(A_prev, pad), f, stride, rows, columns, batch_last=True)
        Z = (phase_taps(taps, f, stride) @ conv_input).reshape(2, 2, c, rows, columns, m)
        blocks = window_blocks(Z, pool, h, w)
        pooled = max_of_blocks(blocks)
        bias = None if b is None else np.asarray(b, dtype=dtype)
        cache = Cache(conv_input, Z, blocks, pooled, shape, pool, stride, channels_first=True)
        return _biased(pooled, bias, shape, in_channels_first=True), cache
    conv_input = shifted_blocks(kernels.zero_pad(A_prev, pad), f, stride, rows, columns)
    if reads_blocks(f, stride):
        weights = padded_taps(taps, f, stride)
        Z = np.empty((2, 2, m * rows * columns, c), dtype=dtype)
        for r in (0, 1):
            for q in (0, 1):
                np.matmul(block_rows(conv_input, f, stride, r).T, weights[q], out=Z[r, q])
    else:
        conv_input = pooled_columns(conv_input, f, stride)
        Z = conv_input.T @ taps
    Z = Z.reshape(2, 2, m, rows, columns, c)
    blocks = window_blocks(Z, pool, h, w)
    pooled = max_of_blocks(blocks)
    return _biased(pooled, b, shape), Cache(conv_input, Z, blocks, pooled, shape, pool, stride)


def fft_conv_pool_forward(A_prev: np.ndarray, W: np.ndarray, b: np.ndarray | None, hparameters: dict,
                          weights: fftconv.SpectralWeights | None = None, relu: bool = False):
    """The same for ``fftconv.conv_forward`` (any number of channels; stride 1, pad < f) and a
    2x2 pool. ``relu`` (evaluation): the relu after the pool too; the cache is then still the conv
    and pool's alone, so no backward pass may use it."""
    shape = f, m, h, w, c = _pooled_shape(A_prev, W, hparameters, "fft-gemm")
    Z, conv_cache = fftconv.conv_forward(A_prev, W, None, hparameters, weights, pooled=True)
    blocks = _fft_blocks(Z, shape)
    pooled = max_of_blocks(blocks)
    out = _biased(pooled, b, shape)
    if relu:  # in place unless `out` is the cache's own `pooled` (no bias)
        out = np.maximum(out, 0, out=None if b is None else out)
    return out, Cache(conv_cache, Z, blocks, pooled, shape, 2, 1)


def _fft_blocks(Z, shape):
    """Views ``(m, h, w*C)`` of a phase-ordered ``(m, 2h, 2w, C)``: rows (row parity, h), columns
    (column parity, w, C)."""
    f, m, h, w, c = shape
    Z = Z.reshape(m, 2, h, 2, w * c)
    return tuple(Z[:, r, :, q] for r in (0, 1) for q in (0, 1))


def is_fft(cache: Cache) -> bool:
    """Whether ``cache`` is a frequency-domain conv's: its ``conv_input`` is fftconv's cache."""
    return not isinstance(cache.conv_input, np.ndarray)


def conv_gradient(dout: np.ndarray, cache: Cache) -> np.ndarray:
    """The pooled gradient routed back to the conv's output (phase-ordered, like ``cache.Z``):
    equals ``F.pool_backward`` (max mode), in phase order."""
    f, m, h, w, c = cache.shape
    if np.shape(dout) != (m, h, w, c):
        raise ValueError(f"dout must have the pooled output's shape {(m, h, w, c)}, got {np.shape(dout)}")
    d_pooled = np.asarray(dout, dtype=cache.Z.dtype)
    if cache.channels_first:
        d_pooled = np.ascontiguousarray(d_pooled.transpose(3, 1, 2, 0))
    d_pooled = d_pooled.reshape(cache.pooled.shape)
    overlapping = cache.pool == 3
    # overlapping windows add their gradients up, from zero
    dZ = np.zeros_like(cache.Z) if overlapping else np.empty_like(cache.Z)
    if is_fft(cache):
        d_blocks = _fft_blocks(dZ, cache.shape)
    else:
        d_blocks = window_blocks(dZ, cache.pool, h, w)
    route_to_first_max(d_pooled, cache.blocks, cache.pooled, d_blocks, overlapping)
    return dZ


def im2col_weight_gradients(dout: np.ndarray, cache: Cache):
    """``(dW, db)`` of the one-channel fused conv from the blocks or columns it kept: equals
    ``F.conv_weight_gradients`` for the gradient that ``F.pool_backward`` gives the conv."""
    dZ = conv_gradient(dout, cache)
    f, m, h, w, c = cache.shape
    stride = cache.stride
    if cache.channels_first:  # all phases' products at once, each phase's taps picked out of them
        n = f + stride
        by_block = (cache.conv_input @ dZ.reshape(4 * c, -1).T).reshape(n, n, 2, 2, c)
        dW = sum(by_block[stride * r:stride * r + f, stride * q:stride * q + f, r, q] for r in (0, 1) for q in (0, 1))
        dW = dW.reshape(f, f, 1, c)
    elif reads_blocks(f, stride):  # each phase's products, its taps picked from among the zeros
        n = f + stride
        dW = np.zeros((f, f, 1, c), dtype=dZ.dtype)
        for r in (0, 1):
            for q in (0, 1):
                padded = (block_rows(cache.conv_input, f, stride, r) @ dZ[r, q].reshape(-1, c)).reshape(f, n, 1, c)
                dW += padded[:, stride * q:stride * q + f]
    else:
        dW = (cache.conv_input @ dZ.reshape(-1, c)).reshape(f, f, 1, c)
    # every pooled gradient lands on exactly one conv output: the bias gradient is their sum
    return dW, kernels.column_sums(np.asarray(dout, dtype=dZ.dtype).reshape(-1, c)).reshape(1, 1, 1, c)
