"""The plan: a model's layers regrouped into the steps that compute them fastest.

Built once from a ``Sequential`` (``Plan(model)``), it stands in for the model's ``forward``,
``backward`` and ``predict_logits``: the same layers' sums, computed by steps (``steps``) that
fuse a few layers, reorder some and use the kernels of this package. ``describe()`` lists the
steps (``mnistcnn train --dry-run`` prints it). Results equal the plain ``Sequential`` within
float32 rounding: tests/engine/test_plan.py runs a small net for each choice below, and random
small nets.

Which step each layer gets is decided here, by these rules in this order:

1. Order (``_relu_after_pool``): a relu right before a max pool runs after it. Max commutes with
   a monotone function, so the numbers are the same, and the relu sees a quarter of the values
   after a 2x2 pool. Not before an average pool: a mean does not commute with relu.
2. Each conv's method (``conv_method``): its own ``algorithm``, else the model's
   ``conv_algorithm``. ``auto`` takes the frequency domain (``fftconv``; it needs stride 1 and
   pad < kernel) where it needs at most ``FFT_MACS_RATIO`` times im2col's multiply-adds, im2col
   otherwise.
3. In training, a max pool whose windows overlap (stride < size): ``OverlappingMaxPoolStep``,
   its gradient summed by input cell number (``maxpool``), where the plain backward adds each
   window offset's through strided slices only ``C`` numbers long. Evaluation has no backward:
   the plain layer.
4. Any other layer that is not a conv: ``LayerStep``, the layer's own arithmetic, in the forms
   of ``kernels`` where NumPy's plainest form is slow: relu (its mask made in the forward pass),
   batchnorm in training (sums by BLAS, in place), the backward of a pool whose windows sit side
   by side (stride == size: written, not added).
5. A conv and the max pool after it, where ``_fuses`` holds: one ``ConvPoolStep`` (``convpool``),
   the conv writing its output in the order the pool reads. It holds for a frequency-domain conv
   with a 2x2 stride-2 pool, and for an im2col conv on one-channel images (the first layer only:
   the fused im2col kernel gives no input gradient) with a 2x2 or 3x3 stride-2 pool
   (``convpool.supported``). The bias is added after the max: rounding is monotone, so the
   values are the same. In evaluation a relu after the pool joins the step, done while the
   output is in cache. Inside, a fused im2col conv of few filters computes its phases
   channel-first (``convpool.channels_first``), else its GEMMs read shifted blocks of the
   images (``convpool.reads_blocks``) or a column matrix made from them.
6. In evaluation, a conv with a bias and a max pool after it that it does not fuse with: the
   conv without its bias, the pool, and ``BiasStep`` adding the bias to the pooled values (a
   quarter of them after a 2x2 pool; the same values, as in rule 5).
7. Any other conv: ``ConvStep``, im2col (a one-channel input's column matrix by slice copies,
   ``convpool.one_channel_columns``) or in the frequency domain.

The rules name a layer by its exact class (``steps.computed_as``), never a subclass: the kernels
copy that class's arithmetic, which a subclass may change, so a subclass's layer (a conv, a relu
or a pool included) runs by rule 4 as its own forward and backward.

A frequency-domain conv's spectral weights are computed once per step (``prepare``) and shared
by its training and evaluation steps and the threads (``steps.Spectrum``). Evaluation runs in
chunks that fit the cache (``eval_chunk``), the dense head on runs of about ``HEAD_IMAGES``
images, on every core (``parallel``). How many workers a training step runs on, threads or
processes, is ``parallel.planned_workers``'s rule.
"""
from __future__ import annotations

import functools

import numpy as np

from ..layer_arguments import ShapeError
from ..layers import Conv2D, MaxPool2D, ReLU
from ..losses import right_answers, softmax_cross_entropy
from ..model import Sequential
from . import convpool, fftconv
from .parallel import keep_freed_memory, map_grouped_in_threads
from .steps import BiasStep, ConvPoolStep, ConvStep, LayerStep, OverlappingMaxPoolStep, Spectrum, Step, computed_as

# Evaluation runs in chunks whose busiest layer touches about this many bytes per chunk, so that
# the intermediate arrays stay in cache.
EVAL_CHUNK_BYTES = 10 << 20
# Images per call of an evaluation's dense head: it then reads its weights once per this many
# images, not once per chunk.
HEAD_IMAGES = 192
# The frequency domain is taken where it needs at most this many times im2col's multiply-adds:
# im2col at these sizes spends more on its column matrix, and in training on the f*f thin GEMMs
# and passes of its input gradient, than on its multiply-adds.
FFT_MACS_RATIO = 1.5


def conv_method(conv: Conv2D, default: str = "auto") -> str:
    """Rule 2: ``im2col`` or ``fft-gemm`` for a built conv: its own ``algorithm``, else ``default``
    (a model-wide choice, which falls back to im2col where the frequency domain does not
    apply); ``auto`` takes the frequency domain where it needs at most ``FFT_MACS_RATIO``
    times the multiply-adds."""
    h, w, c_prev = conv.input_shape
    fits = fftconv.supported(h, w, conv.kernel, conv.stride, conv.pad)
    choice = default if conv.algorithm == "auto" else conv.algorithm
    if conv.algorithm == "fft-gemm" and not fits:  # asked for on this layer: an error, not a fallback
        raise ShapeError("algorithm", f"fft-gemm needs stride 1 and padding < kernel (got stride {conv.stride}, "
                                      f"padding {conv.pad}, kernel {conv.kernel}); use algorithm: im2col or auto")
    if choice == "auto" and fits:
        fft_macs = fftconv.estimated_macs(h, w, c_prev, conv.filters, conv.kernel, conv.pad)
        return "fft-gemm" if fft_macs <= FFT_MACS_RATIO * conv.macs() else "im2col"
    return "fft-gemm" if choice == "fft-gemm" and fits else "im2col"


def _pools_after(model: Sequential, order: list[int], at: int) -> bool:
    """Whether the layer after ``order[at]`` is a max pool."""
    return at + 1 < len(order) and computed_as(model.layers[order[at + 1]], MaxPool2D)


def _relu_after_pool(model: Sequential) -> list[int]:
    """Rule 1: the layers' order with every relu moved after the max pool that follows it."""
    order = list(range(len(model.layers)))
    for i in range(len(order) - 1):
        if computed_as(model.layers[order[i]], ReLU) and computed_as(model.layers[order[i + 1]], MaxPool2D):
            order[i], order[i + 1] = order[i + 1], order[i]
    return order


class Plan:
    """The steps that compute a model in training and in evaluation (see the module's text)."""

    def __init__(self, model: Sequential, conv_algorithm: str = "auto"):
        self.model = model
        self.methods = {}
        for index, layer in enumerate(model.layers):
            if computed_as(layer, Conv2D):
                try:
                    self.methods[index] = conv_method(layer, conv_algorithm)
                except ShapeError as err:
                    raise err.at(index)
        self.spectra = {index: Spectrum(model.layers[index])
                        for index, method in self.methods.items() if method == "fft-gemm"}
        order = _relu_after_pool(model)
        self.training_steps = self._steps(order, training=True)
        self.evaluation_steps = self._steps(order, training=False)

    def _steps(self, order: list[int], training: bool) -> list[Step]:
        """The steps of the layers in ``order``, by rules 3 to 7 of the module's text."""
        layers, steps, at = self.model.layers, [], 0
        while at < len(order):
            index = order[at]
            layer = layers[index]
            if training and computed_as(layer, MaxPool2D) and layer.stride < layer.size:  # rule 3
                steps.append(OverlappingMaxPoolStep(index, layer))
                at += 1
            elif not computed_as(layer, Conv2D):  # rule 4
                moved = at > 0 and index < order[at - 1]
                steps.append(LayerStep(index, layer, f"{layer.type_name}, after the pool" if moved else ""))
                at += 1
            elif _pools_after(self.model, order, at) and self._fuses(index, layers[order[at + 1]]):  # rule 5
                relu = not training and at + 2 < len(order) and computed_as(layers[order[at + 2]], ReLU)
                fused = tuple(order[at:at + (3 if relu else 2)])
                steps.append(ConvPoolStep(fused, layer, self.spectra.get(index), layers[order[at + 1]]))
                at += len(fused)
            elif _pools_after(self.model, order, at) and layer.bias and not training:  # rule 6
                pool = order[at + 1]
                steps += [ConvStep(index, layer, self.spectra.get(index), bias=False), LayerStep(pool, layers[pool]),
                          BiasStep(index, layer)]
                at += 2
            else:  # rule 7
                steps.append(ConvStep(index, layer, self.spectra.get(index)))
                at += 1
        return steps

    def _fuses(self, index: int, pool: MaxPool2D) -> bool:
        """Rule 5: a frequency-domain conv with a 2x2 stride-2 pool over it, or an im2col one on
        the images (one channel, no input gradient to give) with a 2x2 or 3x3 stride-2 pool."""
        conv, method = self.model.layers[index], self.methods[index]
        if method == "im2col" and conv.needs_input_grad:
            return False
        return convpool.supported(conv.input_shape, conv.kernel, conv.stride, conv.pad, pool.size, pool.stride,
                                  method)

    def describe(self) -> list[tuple[str, str, str]]:
        """``(when, layers, what)`` for each step: the training steps (``when`` is "always" for
        those that evaluation runs too), then the steps that evaluation runs instead."""
        evaluation = {step.describe() for step in self.evaluation_steps}
        training = {step.describe() for step in self.training_steps}
        rows = [("always" if step.describe() in evaluation else "training", step.where(), step.what)
                for step in self.training_steps]
        return rows + [("evaluation", step.where(), step.what) for step in self.evaluation_steps
                       if step.describe() not in training]

    # -- training -------------------------------------------------------------------
    def prepare(self, map_in_threads=None) -> None:
        """Compute what depends only on the weights, once per step, before threads share it."""
        for spectrum in self.spectra.values():
            spectrum.prepare(map_in_threads)

    def forward(self, x, training=False, rng=None):
        """``(out, caches)``: the steps in turn. Batchnorm statistics: ``update_batchnorm_statistics``."""
        caches = []
        for step in self.training_steps if training else self.evaluation_steps:
            x, cache = step.forward(x, training, rng)
            caches.append(cache)
        return x, caches

    def backward(self, dout, caches):
        """Yield each step's weight-gradient work as soon as its input gradient is done, so
        that another thread may take it over."""
        for step, cache in zip(reversed(self.training_steps), reversed(caches)):
            dout, work = step.backward(dout, cache)
            if work is not None:
                yield work

    def batch_statistics(self, caches: list) -> list:
        """Each training step's batch statistics (``Step.batch_statistics``) from its cache."""
        return [step.batch_statistics(cache) for step, cache in zip(self.training_steps, caches)]

    def update_batchnorm_statistics(self, parts: list) -> None:
        """Fold the batch statistics of a training step into the running averages, given
        ``batch_statistics`` of each part of the batch."""
        for step, statistics in zip(self.training_steps, zip(*parts)):
            step.update_statistics(list(statistics))

    def fold_batchnorm_statistics(self, x, rng=None) -> None:
        """A training forward pass of ``x`` for its batch statistics alone (``recompute_batchnorm``)."""
        self.update_batchnorm_statistics([self.batch_statistics(self.forward(x, training=True, rng=rng)[1])])

    def loss_and_gradients(self, x, y, rng=None, label_smoothing=0.0, scale=1.0, hand_over=None):
        """One training step's arithmetic for a batch: ``(loss, correct, grads, caches)``.
        ``scale`` multiplies the gradients (a part of a batch passes its share of it);
        ``hand_over``, when given, takes each piece of weight-gradient work instead of running
        it here (then ``grads`` is empty). Batchnorm statistics are not committed."""
        with np.errstate(over="ignore", invalid="ignore"):  # the trainer checks the numbers itself
            logits, caches = self.forward(x, training=True, rng=rng)
            loss, dlogits = softmax_cross_entropy(logits, y, label_smoothing)
            if scale != 1.0:
                dlogits *= dlogits.dtype.type(scale)
            grads = {}
            for work in self.backward(dlogits, caches):
                if hand_over is None:
                    grads.update(work())
                else:
                    hand_over(work)
        return loss, int(right_answers(logits, y).sum()), grads, caches

    # -- evaluation ------------------------------------------------------------------
    def predict_logits(self, x: np.ndarray, batch_size: int = 1000, transform=None, workers=None) -> np.ndarray:
        """Evaluation-mode logits for a whole array; ``transform`` maps a uint8 batch.

        Batches are capped at ``eval_chunk`` images so that a chunk's arrays stay in cache
        (the numbers do not depend on the chunk). The chunks run on ``workers`` threads
        (default: one per core); the dense head after the last image-shaped layer runs on
        fixed runs of chunks, about ``HEAD_IMAGES`` images at once.
        """
        keep_freed_memory()
        batch_size, group = self.eval_runs(batch_size)
        self.prepare()
        head = head_start(self.model)
        body = [step for step in self.evaluation_steps if step.first < head]
        tail = [step for step in self.evaluation_steps if step.first >= head]

        def features(start):
            batch = x[start:start + batch_size]
            return _run(body, transform(batch) if transform else batch)

        outs = map_grouped_in_threads(features, functools.partial(_run, tail), range(0, len(x), batch_size),
                                      group, workers)
        return np.concatenate(outs) if outs else np.zeros((0,) + self.model.output_shape, dtype=np.float32)

    def eval_runs(self, batch_size: int) -> tuple[int, int]:
        """``(chunk, group)`` of ``predict_logits``: images per chunk, and chunks per run of the
        dense head. A slice of ``chunk * group`` images evaluated alone is computed as the same
        chunks and runs as in the whole array."""
        chunk = min(batch_size, eval_chunk(self.model, self.methods))
        has_tail = head_start(self.model) < len(self.model.layers)
        return chunk, (max(1, HEAD_IMAGES // chunk) if has_tail else 1)


def eval_chunk(model: Sequential, methods: dict) -> int:
    """Images per evaluation chunk: EVAL_CHUNK_BYTES over the busiest layer's bytes per image
    (``methods``: each conv's method by layer index), a multiple of 16 between 16 and 256."""
    busiest = max((working_values(model, i, methods.get(i)) for i in range(len(model.layers))), default=1)
    per_image = busiest * next((p.itemsize for p in model.params().values()), 4)
    return int(min(256, max(16, EVAL_CHUNK_BYTES // per_image // 16 * 16)))


def head_start(model: Sequential) -> int:
    """The first layer of the head that sees flat vectors only (LeNet: its first dense),
    ``len(layers)`` if the last layer's input is an image."""
    head = len(model.layers)
    while head > 0 and len(model.layers[head - 1].input_shape) == 1:
        head -= 1
    return head


def working_values(model: Sequential, index: int, method: str | None) -> int:
    """Numbers per image that layer ``index`` reads and writes: input, output, and a conv's
    scratch by its ``method``."""
    layer = model.layers[index]
    values = int(np.prod(layer.input_shape)) + int(np.prod(layer.output_shape))
    if method == "fft-gemm":  # the input's and output's spectra
        return values + fftconv.spectrum_values(*layer.input_shape, layer.filters, layer.kernel, layer.pad)
    if method == "im2col":  # the im2col matrix
        h, w, _ = layer.output_shape
        return values + h * w * layer.kernel ** 2 * layer.input_shape[2]
    return values


def _run(steps: list[Step], x):
    for step in steps:
        x, _ = step.forward(x, False, None)
    return x
