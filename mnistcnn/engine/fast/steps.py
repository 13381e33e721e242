"""The steps of a plan (``plan``): each computes one or a few layers of a model in training or
evaluation, reading the layers' parameters and keeping no state of its own but a conv's
spectral weights, so two threads can run the same steps on two parts of a batch.

A step stands in for its layers' ``forward_pass`` and ``backward_pass`` (``layers``), as
``Sequential.forward`` and ``backward`` call them in turn: ``forward(x, training, rng)``
returns ``(out, cache)``; ``backward(dout, cache)`` returns the input gradient at once and the
weight gradients as work that any thread may run later: the same sums whichever thread runs
it, and whenever. Each step computes its layers with the plain functions or with a kernel of
``kernels``, ``convpool``, ``fftconv`` or ``maxpool``, each tested equal to the plain one;
which step a layer gets is ``plan``'s choice.
"""
from __future__ import annotations

import functools

import numpy as np

from .. import functional as F
from ..model import layer_key
from ..layers import AvgPool2D, BatchNorm, Conv2D, Dense, Layer, MaxPool2D, ReLU
from . import convpool, fftconv, kernels, maxpool


def computed_as(layer: Layer, *kinds: type) -> bool:
    """Whether the fast path may compute ``layer`` by its kernels for one of ``kinds``: only a layer of
    exactly that class. The kernels copy that class's arithmetic, which a subclass may change (a conv
    that scales its output), so a subclass runs as the plain engine runs it: its own forward_pass and
    backward_pass (``LayerStep``)."""
    return type(layer) in kinds


def _keyed(index: int, compute, *args) -> dict:
    """The gradients dict that ``compute(*args)`` returns, keyed like ``Sequential.params()``."""
    return {layer_key(index, name): grad for name, grad in compute(*args).items()}


class Step:
    """Some layers of the model (indices ``layers``, the first one ``first``), computed as one.
    ``forward`` returns ``(out, cache)``; ``backward`` returns the input gradient and the weight
    gradients' work: a function (any thread may run it) returning a dict keyed like
    ``Sequential.params()``, or None."""

    def __init__(self, layers: tuple, what: str):
        self.layers, self.first, self.what = layers, layers[0], what

    def forward(self, x, training, rng):
        raise NotImplementedError

    def backward(self, dout, cache):
        raise NotImplementedError

    def batch_statistics(self, cache):
        """What a training pass's ``cache`` gives to ``update_statistics``: ``(count, mean,
        variance)`` for a batchnorm, else None."""
        return None

    def update_statistics(self, statistics: list) -> None:
        """Fold the batch statistics of a training pass's parts (``batch_statistics`` of each)
        into the layers (batchnorm)."""

    def where(self) -> str:
        """The layers, in the order the step computes them."""
        return ", ".join(map(str, self.layers))

    def describe(self) -> str:
        return f"{'layers' if len(self.layers) > 1 else 'layer'} {self.where()}: {self.what}"


class LayerStep(Step):
    """One layer as the plain engine runs it, but for relu, batchnorm in training and the
    backward of pools whose windows sit side by side (stride == size; ``kernels``); a dense
    layer's weight gradients as work."""

    def __init__(self, index: int, layer: Layer, what: str = ""):
        super().__init__((index,), what or layer.type_name)
        self.layer = layer

    def forward(self, x, training, rng):
        if computed_as(self.layer, ReLU):
            return kernels.relu_forward(x, training)
        if training and computed_as(self.layer, BatchNorm):
            return kernels.batchnorm_forward(self.layer, x)
        return self.layer.forward_pass(x, training, rng)

    def backward(self, dout, cache):
        layer = self.layer
        if computed_as(layer, ReLU):
            return kernels.relu_backward(dout, cache), None
        if computed_as(layer, BatchNorm):
            dx, grads = kernels.batchnorm_backward(layer, dout, cache)
            return dx, functools.partial(_keyed, self.first, dict, grads)
        if computed_as(layer, MaxPool2D, AvgPool2D) and layer.stride == layer.size:
            return kernels.tiled_pool_backward(dout, cache, layer.mode), None
        if computed_as(layer, Dense):
            dx = layer.input_gradient(dout) if layer.needs_input_grad else None
            return dx, functools.partial(_keyed, self.first, layer.weight_gradients, dout, cache)
        dx, grads = layer.backward_pass(dout, cache)
        return dx, (functools.partial(_keyed, self.first, dict, grads) if grads else None)

    # A batchnorm's subclass, computed by its own forward_pass, still has its running statistics
    # committed here: the plain engine does that in BatchNorm.forward, which the subclass inherits.
    def batch_statistics(self, cache):
        if not isinstance(self.layer, BatchNorm):
            return None
        x_hat, _, mean, var = cache
        return x_hat.size // x_hat.shape[-1], mean, var

    def update_statistics(self, statistics: list) -> None:
        if isinstance(self.layer, BatchNorm):
            # the whole batch's mean and variance from its parts': one update per step, as with
            # one thread, whatever the number of parts
            counts = np.array([count for count, _, _ in statistics], dtype=np.float64)
            means = np.array([mean for _, mean, _ in statistics], dtype=np.float64)
            variances = np.array([variance for _, _, variance in statistics], dtype=np.float64)
            weights = counts[:, None] / counts.sum()
            mean = (weights * means).sum(axis=0)
            var = (weights * (variances + (means - mean) ** 2)).sum(axis=0)
            self.layer.update_running_statistics(mean, var, int(counts.sum()))


class OverlappingMaxPoolStep(LayerStep):
    """A max pool whose windows overlap: the plain forward, the backward by cell number
    (``maxpool``)."""

    def __init__(self, index: int, pool: MaxPool2D):
        super().__init__(index, pool, f"maxpool2d {pool.size}x{pool.size} stride {pool.stride}, "
                                      "gradient by cell number")

    def backward(self, dout, cache):
        A_prev, _, A = cache
        return maxpool.max_pool_backward(dout, A_prev, A, self.layer.size, self.layer.stride), None


class Spectrum:
    """A frequency-domain conv's weights in the frequency domain, shared by all its steps (in
    training and in evaluation) and threads: made by ``prepare`` before each training step and
    each evaluation (``Plan.prepare``)."""

    def __init__(self, conv: Conv2D):
        self.conv = conv
        self.made_from = self.weights = None  # a copy of W, and its fftconv.SpectralWeights

    def prepare(self, map_in_threads=None) -> None:
        """From the weights as they are now; ``map_in_threads`` (a thread pool's map) splits the
        frequencies in two."""
        W = self.conv.params["W"]
        h, w, _ = self.conv.input_shape
        weights = fftconv.empty_spectral_weights(W, h, w, self.conv.pad)
        fill = functools.partial(fftconv.fill_spectral_weights, weights, W, h, w, self.conv.pad)
        frequencies = len(weights.blocks)
        if map_in_threads is None:
            fill(0, frequencies)
        else:
            map_in_threads(lambda span: fill(*span), [(0, frequencies // 2), (frequencies // 2, frequencies)])
        self.made_from, self.weights = W.copy(), weights

    def current(self):
        """The prepared weights if they were made from W as it is now (the optimiser updates W in
        place, so the check is by value), else None: the kernel then computes them anew."""
        W = self.conv.params["W"]
        if self.made_from is not None and self.made_from.dtype == W.dtype and np.array_equal(self.made_from, W):
            return self.weights
        return None


class ConvStep(Step):
    """A conv, im2col or in the frequency domain (given its ``spectrum``); ``bias=False``
    leaves the bias to a ``BiasStep`` after the pool."""

    def __init__(self, index: int, conv: Conv2D, spectrum: Spectrum | None, bias: bool = True):
        f = conv.kernel
        shape = f"{f}x{f}x{conv.input_shape[2]}x{conv.filters}"
        method = "frequency-domain" if spectrum else "im2col"
        super().__init__((index,), f"conv {shape}, {method}" + ("" if bias else ", no bias"))
        self.conv, self.spectrum, self.bias = conv, spectrum, bias and conv.bias

    def forward(self, x, training, rng):
        conv = self.conv
        b = conv.params["b"] if self.bias else None
        if self.spectrum:
            return fftconv.conv_forward(x, conv.params["W"], b, conv.hparameters(), self.spectrum.current())
        one_channel = conv.input_shape[2] == 1
        return kernels.conv_forward(x, conv.params["W"], b, conv.hparameters(),
                                    convpool.one_channel_columns if one_channel else F.im2col)

    def backward(self, dout, cache):
        needs_dx = self.conv.needs_input_grad
        if self.spectrum:
            dY = fftconv.output_spectrum_gradient(dout, cache)
            dx = fftconv.input_gradient(dY, cache) if needs_dx else None
            return dx, self._weight_work(fftconv.weight_gradients, dout, dY, cache)
        dx = F.conv_input_gradient(dout, cache) if needs_dx else None
        return dx, self._weight_work(kernels.conv_weight_gradients, dout, cache)

    def _weight_work(self, compute, *args):
        """``compute(*args)``'s ``(dW, db)``, named and keyed, as work for any thread."""
        return functools.partial(_keyed, self.first, self._named, compute, *args)

    def _named(self, compute, *args) -> dict:
        return self.conv.named_gradients(*compute(*args))


class ConvPoolStep(ConvStep):
    """A conv and the stride-2 max pool after it as one kernel (``convpool``); in evaluation,
    with ``relu``, the relu after the pool too."""

    def __init__(self, layers: tuple, conv: Conv2D, spectrum: Spectrum | None, pool: MaxPool2D):
        super().__init__(layers[0], conv, spectrum)
        self.layers, self.relu, self.pool_size = layers, len(layers) == 3, pool.size
        if not spectrum and convpool.channels_first(conv.filters):
            self.what += " (channel-first phases)"
        self.what += f" + max pool {pool.size}x{pool.size}" + (" + relu" if self.relu else "") + ", fused"

    def forward(self, x, training, rng):
        conv = self.conv
        b = conv.params.get("b")
        if self.spectrum:
            weights = self.spectrum.current()
            return convpool.fft_conv_pool_forward(x, conv.params["W"], b, conv.hparameters(), weights, self.relu)
        return convpool.conv_pool_forward(x, conv.params["W"], b, conv.hparameters(), training, self.relu,
                                          self.pool_size)

    def backward(self, dout, cache):
        if self.spectrum:
            return ConvStep.backward(self, convpool.conv_gradient(dout, cache), cache.conv_input)
        # a first layer's (im2col fuses only there): no input gradient, all of it is weight work
        return None, self._weight_work(convpool.im2col_weight_gradients, dout, cache)


class BiasStep(Step):
    """A conv's bias, added after the max pool that follows it (evaluation)."""

    def __init__(self, index: int, conv: Conv2D):
        super().__init__((index,), "its bias, after the pool")
        self.conv = conv

    def forward(self, x, training, rng):
        return x + self.conv.params["b"].reshape(-1), None


