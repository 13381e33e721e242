"""Pure array kernels: convolution and pooling, forward and backward.

The names, signatures and layout are the seed notebook's, so its cells run unchanged (all but
the one that passes a wrongly shaped ``dA``, which is now refused):
activations are NHWC, conv weights ``W`` are ``(f, f, C_prev, C)``, biases ``b`` are
``(1, 1, 1, C)``, conv ``hparameters = {"stride", "pad"}`` and pool ``{"f", "stride"}``.
Every forward returns ``(out, cache)``; the backward takes that cache.

Unlike the notebook, nothing here loops over examples or pixels: convolution is one GEMM
over an im2col matrix built from a strided view, and the scatter back (col2im) and pooling
loop only over the ``f*f`` kernel offsets, each step a whole-batch strided slice.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

POOL_MODES = ("max", "average")


def floating_dtype(x: np.ndarray, *others: np.ndarray | None) -> np.dtype:
    """The dtype to compute in: the inputs' common float type (integers promote to float64;
    None, an absent bias, is skipped)."""
    dtype = np.result_type(x, *(o for o in others if o is not None))
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def as_floating(x: np.ndarray, *others: np.ndarray | None) -> np.ndarray:
    """``x`` in ``floating_dtype(x, *others)``: integers, such as the notebook's uint8 images, as
    floats, whose arithmetic neither wraps nor truncates; a float array passes through uncopied."""
    return np.asarray(x, dtype=floating_dtype(x, *others))


def _int_param(hparameters: dict, key: str, minimum: int) -> int:
    """``hparameters[key]`` as an int >= ``minimum``; a ValueError that names the key otherwise."""
    try:
        value = hparameters[key]
    except (KeyError, TypeError):
        raise ValueError(f"hparameters needs the key {key!r}, e.g. {{{key!r}: {max(minimum, 1)}}}") from None
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"hparameters[{key!r}] must be an integer >= {minimum}, got {value!r}")
    return int(value)


def require_4d(name: str, x: np.ndarray) -> None:
    if np.ndim(x) != 4:
        raise ValueError(f"{name} must be 4-D (m, n_H, n_W, n_C), got shape {np.shape(x)}")


def sum_rows(rows: np.ndarray) -> np.ndarray:
    """``rows.sum(axis=0)`` of a 2-D array, added up in float64: NumPy adds a float32 array's
    rows one at a time, and over a conv output's tens of thousands of rows that loses digits."""
    return rows.sum(axis=0, dtype=np.float64).astype(rows.dtype)


def output_size(n: int, f: int, stride: int, pad: int = 0) -> int:
    """Number of window positions along one axis: floor((n + 2*pad - f) / stride) + 1."""
    return (n + 2 * pad - f) // stride + 1


def offset_slice(start: int, count: int, stride: int) -> slice:
    """The input rows (or columns) that kernel offset ``start`` touches for ``count`` outputs.

    The notebook's loops read input row ``h*stride + start`` for output row ``h`` at row
    ``start`` of its window; fixing the window row instead gives input rows ``start, start +
    stride, ...``, one for each output row: one slice for every output at once."""
    return slice(start, start + stride * (count - 1) + 1, stride)


def zero_pad(X: np.ndarray, pad: int) -> np.ndarray:
    """Pad the two spatial axes of an NHWC batch with ``pad`` zeros on each side."""
    require_4d("X", X)
    return np.pad(X, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="constant", constant_values=0)


def im2col(A_pad: np.ndarray, f: int, stride: int, n_H: int, n_W: int) -> np.ndarray:
    """Windows of a padded NHWC batch as rows: shape ``(m*n_H*n_W, f*f*C)``.

    Row ``(i, h, w)`` is the notebook's ``a_slice_prev`` for example ``i`` and output ``(h, w)``,
    ``A_pad[i, h*stride:h*stride+f, w*stride:w*stride+f, :]``, flattened in (f, f, C) order:
    the order of ``W.reshape(f*f*C, C_out)``, so conv is one GEMM with no transpose.
    """
    m, _, _, n_C = A_pad.shape
    s_m, s_h, s_w, s_c = A_pad.strides
    # a view, nothing copied: output (h, w) starts at input row h*stride, so those axes step
    # stride rows; offset (kernel_row, kernel_col) in the window moves one row or column. reshape
    # makes the copy.
    windows = as_strided(
        A_pad,
        shape=(m, n_H, n_W, f, f, n_C),
        strides=(s_m, s_h * stride, s_w * stride, s_h, s_w, s_c),
        writeable=False,
    )
    return windows.reshape(m * n_H * n_W, f * f * n_C)


def conv_forward(A_prev: np.ndarray, W: np.ndarray, b: np.ndarray, hparameters: dict):
    """Convolution. A_prev (m, n_H_prev, n_W_prev, C_prev), W (f, f, C_prev, C), b (1, 1, 1, C),
    or None for no bias.

    Returns ``Z`` of shape (m, n_H, n_W, C) and ``cache = (A_prev, W, b, hparameters, cols)``;
    the first four entries are the notebook's cache, ``cols`` is the im2col matrix reused by
    the backward pass.
    """
    require_4d("A_prev", A_prev)
    require_4d("W", W)
    m, n_H_prev, n_W_prev, n_C_prev = A_prev.shape
    f, f_width, w_C_prev, n_C = W.shape
    if f != f_width:
        raise ValueError(f"W must be square in its first two axes (f, f, C_prev, C), got {W.shape}")
    if w_C_prev != n_C_prev:
        raise ValueError(f"W expects {w_C_prev} input channels but A_prev has {n_C_prev} (shape {A_prev.shape})")
    if b is not None and np.size(b) != n_C:
        raise ValueError(f"b must have {n_C} entries, shape (1, 1, 1, {n_C}); got shape {np.shape(b)}")
    stride = _int_param(hparameters, "stride", 1)
    pad = _int_param(hparameters, "pad", 0)
    n_H = output_size(n_H_prev, f, stride, pad)
    n_W = output_size(n_W_prev, f, stride, pad)
    if n_H < 1 or n_W < 1:
        raise ValueError(f"a {f}x{f} kernel with pad {pad} does not fit an input of {n_H_prev}x{n_W_prev}")

    dtype = floating_dtype(A_prev, W, b)
    A_pad = zero_pad(np.asarray(A_prev, dtype=dtype), pad)
    cols = im2col(A_pad, f, stride, n_H, n_W)
    # The notebook's loops over (i, h, w, c) each take conv_single_step: one window times one
    # filter, summed, plus b[c]. Rows of cols are the windows and columns of W.reshape the
    # filters, so one matrix product computes every one of those sums.
    Z = cols @ W.reshape(f * f * n_C_prev, n_C).astype(dtype, copy=False)
    if b is not None:
        Z += np.asarray(b, dtype=dtype).reshape(n_C)
    return Z.reshape(m, n_H, n_W, n_C), (A_prev, W, b, hparameters, cols)


def col2im_add(dA_pad: np.ndarray, dZ_flat: np.ndarray, W: np.ndarray, stride: int, n_H: int, n_W: int) -> None:
    """Add every window's ``W * dZ`` into the padded input gradient ``dA_pad`` (m, n_H_prev +
    2*pad, n_W_prev + 2*pad, C_prev), given ``dZ_flat`` (m*n_H*n_W, C), a row per output pixel.

    The notebook adds ``W[:, :, :, c] * dZ[i, h, w, c]`` to the window of output (h, w), one
    window and channel at a time. Here the loop runs over the f*f kernel offsets instead: offset
    (kernel_row, kernel_col) of every window is input pixel (h*stride + kernel_row, w*stride +
    kernel_col), for all outputs one strided slice, and what it receives, summed over c, is
    ``dZ_flat @ W[kernel_row, kernel_col].T``: (m*n_H*n_W, C) times (C, C_prev). Within one
    offset no two outputs share a pixel, so ``+=`` through the slice loses no addition; where
    windows overlap, they meet at different offsets and add up over the loop.
    """
    f = W.shape[0]
    m = dA_pad.shape[0]
    for kernel_row in range(f):
        h_slice = offset_slice(kernel_row, n_H, stride)
        for kernel_col in range(f):
            dA_at_offset = dZ_flat @ W[kernel_row, kernel_col].T
            dA_pad[:, h_slice, offset_slice(kernel_col, n_W, stride), :] += dA_at_offset.reshape(m, n_H, n_W, -1)


def conv_backward(dZ: np.ndarray, cache, compute_dA: bool = True):
    """Gradients of a convolution: returns ``(dA_prev, dW, db)``, shaped like A_prev, W and
    (1, 1, 1, C).

    ``compute_dA=False`` skips the input gradient (``dA_prev`` is None): a network's first
    layer has no use for it.
    """
    dW, db = conv_weight_gradients(dZ, cache)
    return (conv_input_gradient(dZ, cache) if compute_dA else None), dW, db


def dZ_rows(dZ: np.ndarray, cache) -> np.ndarray:
    """``dZ``, checked against the forward output's shape, as one row per output pixel:
    (m*n_H*n_W, C), the layout of the GEMM that made it."""
    A_prev, W, _, hparameters, cols = cache
    f, n_C = W.shape[0], W.shape[3]
    stride, pad = int(hparameters["stride"]), int(hparameters["pad"])
    n_H, n_W = (output_size(n, f, stride, pad) for n in A_prev.shape[1:3])
    if np.shape(dZ) != (A_prev.shape[0], n_H, n_W, n_C):
        raise ValueError(f"dZ must have the forward output's shape {(A_prev.shape[0], n_H, n_W, n_C)}, "
                         f"got {np.shape(dZ)}")
    return np.ascontiguousarray(dZ, dtype=cols.dtype).reshape(-1, n_C)


def conv_weight_gradients(dZ: np.ndarray, cache):
    """``(dW, db)``, shaped like W and (1, 1, 1, C). The notebook adds ``a_slice * dZ[i, h, w, c]``
    to ``dW[:, :, :, c]`` for every window: summed over the windows, that is ``cols.T @ dZ``
    with the im2col matrix the forward pass kept, (f*f*C_prev, m*n_H*n_W) times (m*n_H*n_W, C);
    and ``db[c]``, the sum of ``dZ[..., c]``, the column sums of the same rows."""
    W, cols = cache[1], cache[4]
    rows = dZ_rows(dZ, cache)
    return (cols.T @ rows).reshape(W.shape), sum_rows(rows).reshape(1, 1, 1, -1)


def conv_input_gradient(dZ: np.ndarray, cache) -> np.ndarray:
    """``dA_prev``: every window sends ``W * dZ`` back to the input pixels it read."""
    A_prev, W, _, hparameters, cols = cache
    m, n_H_prev, n_W_prev, n_C_prev = A_prev.shape
    stride, pad = int(hparameters["stride"]), int(hparameters["pad"])
    dZ_flat = dZ_rows(dZ, cache)  # first: it checks dZ's shape, which the next line reads
    n_H, n_W = np.shape(dZ)[1:3]
    dtype = cols.dtype
    dA_pad = np.zeros((m, n_H_prev + 2 * pad, n_W_prev + 2 * pad, n_C_prev), dtype=dtype)
    col2im_add(dA_pad, dZ_flat, W.astype(dtype, copy=False), stride, n_H, n_W)
    # Slicing [pad:pad+H] rather than the notebook's [pad:-pad], which is empty when pad == 0.
    return np.ascontiguousarray(dA_pad[:, pad:pad + n_H_prev, pad:pad + n_W_prev, :])


def _check_mode(mode: str) -> None:
    if mode not in POOL_MODES:
        raise ValueError(f"mode must be one of {POOL_MODES}, got {mode!r}")


def pool_geometry(shape, hparameters):
    """``(f, stride, (m, n_H, n_W, C))`` of a pool of an input of ``shape`` (no padding)."""
    f = _int_param(hparameters, "f", 1)
    stride = _int_param(hparameters, "stride", 1)
    m, n_H_prev, n_W_prev, n_C = shape
    n_H, n_W = output_size(n_H_prev, f, stride), output_size(n_W_prev, f, stride)
    if n_H < 1 or n_W < 1:
        raise ValueError(f"a {f}x{f} pooling window does not fit an input of {n_H_prev}x{n_W_prev}")
    return f, stride, (m, n_H, n_W, n_C)


def window_slices(f: int, stride: int, n_H: int, n_W: int):
    """(h_slice, w_slice): the strided slices of each window offset, in row-major order."""
    for window_row in range(f):
        for window_col in range(f):
            yield offset_slice(window_row, n_H, stride), offset_slice(window_col, n_W, stride)


def window_max(A: np.ndarray, f: int, stride: int, out_shape) -> np.ndarray:
    """Each window's maximum, (m, n_H, n_W, C). The notebook takes np.max of one window at a
    time; a window's maximum is also the maximum over its f*f offsets, and one offset of every
    window is one strided slice, so a running np.maximum over f*f slices gives them all."""
    _, n_H, n_W, _ = out_shape
    running_max = None
    for h_slice, w_slice in window_slices(f, stride, n_H, n_W):
        at_offset = A[:, h_slice, w_slice, :]  # one cell of every window, shaped like the output
        running_max = at_offset.copy() if running_max is None else np.maximum(running_max, at_offset, out=running_max)
    return running_max


def pool_forward(A_prev: np.ndarray, hparameters: dict, mode: str = "max"):
    """Max or average pooling of an NHWC batch with an f x f window and a stride.

    Returns ``A`` (m, n_H, n_W, C) and ``cache = (A_prev, hparameters)``, the notebook's cache,
    followed in max mode by ``A``, whose maxima the backward pass then need not find again.
    """
    require_4d("A_prev", A_prev)
    _check_mode(mode)
    f, stride, out_shape = pool_geometry(A_prev.shape, hparameters)
    A_in = as_floating(A_prev)
    if mode == "max":
        A = window_max(A_in, f, stride, out_shape)
        return A, (A_prev, hparameters, A)
    # each window's mean: the sum over its f*f offsets, each offset one slice for every window
    A = np.zeros(out_shape, dtype=A_in.dtype)
    for h_slice, w_slice in window_slices(f, stride, out_shape[1], out_shape[2]):
        A += A_in[:, h_slice, w_slice, :]
    A /= f * f
    return A, (A_prev, hparameters)


def first_max_masks(offset_values: list, maximum: np.ndarray):
    """For each window offset in turn (row-major), the mask of the windows whose first maximum
    sits there, given each offset's values in every window (``offset_values``, each shaped like
    ``maximum``) and the windows' ``maximum``: PyTorch's tie rule, by which each window's gradient
    goes to one cell only (the notebook's ``x == max(x)`` sends it whole to every tied cell)."""
    unclaimed = np.ones(maximum.shape, dtype=bool)  # windows whose first maximum is still to come
    for at_offset in offset_values:
        first = (at_offset == maximum) & unclaimed
        unclaimed &= ~first  # claimed now: a later offset equal to the maximum is not the first
        yield first


def pool_backward(dA: np.ndarray, cache, mode: str = "max") -> np.ndarray:
    """Route ``dA[i, h, w, c]`` back to its window: all of it to the first maximum in row-major
    window order (max mode, PyTorch's tie rule) or ``dA / (f*f)`` to every cell (average mode).
    Overlapping windows accumulate. ``mode`` says which pooling made ``cache``.
    """
    _check_mode(mode)
    A_prev, hparameters = cache[0], cache[1]
    f, stride, out_shape = pool_geometry(A_prev.shape, hparameters)
    if np.shape(dA) != out_shape:
        raise ValueError(f"dA must have the pooled output's shape {out_shape}, got {np.shape(dA)}")
    dtype = floating_dtype(A_prev, dA)
    dA = np.asarray(dA, dtype=dtype)
    A_in = np.asarray(A_prev, dtype=dtype)
    dA_prev = np.zeros(A_in.shape, dtype=dtype)
    slices = list(window_slices(f, stride, out_shape[1], out_shape[2]))
    if mode == "average":  # the notebook's distribute_value for every window, one offset at a time
        dA_per_cell = dA / (f * f)
        for h_slice, w_slice in slices:
            dA_prev[:, h_slice, w_slice, :] += dA_per_cell
        return dA_prev
    # the maxima: kept by a max-mode forward pass; the notebook's cache (A_prev, hparameters) has none
    A = cache[2] if len(cache) > 2 else window_max(A_in, f, stride, out_shape)
    offset_values = [A_in[:, h_slice, w_slice, :] for h_slice, w_slice in slices]
    # the notebook's mask * dA, one offset of every window at a time: the mask of an offset is
    # True in the windows whose first maximum it holds
    for (h_slice, w_slice), first in zip(slices, first_max_masks(offset_values, A)):
        dA_prev[:, h_slice, w_slice, :] += dA * first
    return dA_prev
