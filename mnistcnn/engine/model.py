"""Sequential model: a list of layers built from config specs, with shape inference."""
from __future__ import annotations

import numpy as np

from ..errors import NonFiniteError
from .fast.convpool import POOLED_BY_CONV
from .layers import Conv2D, Layer, LayerConfigError, MaxPool2D, ReLU, layer_from_config
from .losses import softmax_cross_entropy
from .fast.parallel import map_grouped_in_threads


# Evaluation runs in chunks whose busiest layer touches about this many bytes per chunk, so that
# the intermediate arrays stay in cache (measured here: LeNet fastest at 32-48 images, 18% faster
# than at 256; the notebook's small net fastest at 160-256).
EVAL_CHUNK_BYTES = 10 << 20
# Images per call of an evaluation's dense head (several chunks; LeNet, 30 alternating rounds:
# about 1% faster than a call per chunk, 4% in a first, noisier measurement).
HEAD_IMAGES = 192


class Sequential:
    """Layers applied in order to NHWC batches; shapes exclude the batch axis."""

    def __init__(self, layers: list[Layer], input_shape, rng: np.random.Generator | None = None,
                 dtype=np.float32):
        self.layers = layers
        self.input_shape = tuple(int(n) for n in input_shape)
        rng = rng if rng is not None else np.random.default_rng(0)
        shape = self.input_shape
        names = set()
        for index, layer in enumerate(layers):
            if layer.name is None:
                layer.name = f"{index}_{layer.type_name}"
            if layer.name in names:
                raise LayerConfigError("name", f"layer name {layer.name!r} is used twice; names must be unique")
            names.add(layer.name)
            try:
                shape = layer.build(shape, rng, dtype)
            except LayerConfigError as err:
                err.index = index
                raise
        if layers:
            layers[0].needs_input_grad = False  # nothing upstream wants the image's gradient
        self.output_shape = shape

    @classmethod
    def from_config(cls, specs: list[dict], input_shape, rng=None, dtype=np.float32) -> "Sequential":
        layers = []
        for index, spec in enumerate(specs):
            try:
                layers.append(layer_from_config(spec))
            except TypeError as err:  # an argument the layer does not take
                raise _indexed(LayerConfigError(None, str(err)), index) from None
            except LayerConfigError as err:
                raise _indexed(err, index)
        return cls(layers, input_shape, rng, dtype)

    def get_config(self) -> list[dict]:
        return [layer.get_config() for layer in self.layers]

    # -- parameters -------------------------------------------------------------
    def params(self) -> dict[str, np.ndarray]:
        """Trainable arrays keyed ``"<layer index>.<name>"`` (live references, updated in place)."""
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()}

    def buffers(self) -> dict[str, np.ndarray]:
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.buffers.items()}

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {f"param.{k}": v.copy() for k, v in self.params().items()}
        state.update({f"buffer.{k}": v.copy() for k, v in self.buffers().items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays into the layers; the caller has checked names and shapes."""
        for i, layer in enumerate(self.layers):
            for store, prefix in ((layer.params, "param"), (layer.buffers, "buffer")):
                for k in store:
                    store[k] = np.array(state[f"{prefix}.{i}.{k}"], dtype=store[k].dtype)

    def num_params(self) -> int:
        return sum(layer.num_params() for layer in self.layers)

    def macs(self) -> int:
        return sum(layer.macs() for layer in self.layers)

    def astype(self, dtype) -> "Sequential":
        for layer in self.layers:
            layer.astype(dtype)
        return self

    def layer_index(self, key) -> int:
        """An index from an int, a numeric string or a layer name."""
        if isinstance(key, str) and key.lstrip("-").isdigit():
            key = int(key)
        if isinstance(key, int):
            if -len(self.layers) <= key < len(self.layers):
                return key % len(self.layers)
            raise IndexError(key)
        for i, layer in enumerate(self.layers):
            if layer.name == key:
                return i
        raise KeyError(key)

    # -- computation ------------------------------------------------------------
    def forward(self, x: np.ndarray, training=False, rng=None, upto: int | None = None, commit=True,
                fast=False, span: tuple[int, int] | None = None):
        """Run layers ``0..upto`` (all by default). Returns ``(out, caches)``, one cache per layer.
        ``span=(first, end)``: only layers ``first..end-1`` of a whole pass, ``x`` being the
        input of layer ``first`` (which must not split a pair that runs as one, see below).

        In training, batchnorm's running statistics are updated unless ``commit`` is False
        (then ``commit_statistics(caches)`` does it later). ``fast`` (whole passes only) runs
        each relu that feeds a max pool after the pool instead: the same numbers, a quarter of
        the relu's work (max commutes with a monotone function, and so do their gradients).
        In a fast evaluation a conv's bias is added after the max pool that follows it, for the
        same reason (float rounding is monotone too, so max(z + b) == max(z) + b exactly).
        A conv and the 2x2 max pool after it run as one (``convpool``: a frequency-domain
        conv, or a first one on one-channel images): the same outputs (bit for bit at LeNet's
        shapes), gradients summed in another order. In a fast evaluation that kernel does the
        relu after the pool as well (``_fused_relus``).
        """
        stop = len(self.layers) if upto is None else upto + 1
        caches = [None] * stop
        order = self._order(fast) if upto is None else list(range(stop))
        pooled = self._pooled_convs(order) if fast and upto is None else {}
        late = self._late_biases(order) if fast and not training and upto is None else {}
        relus = self._fused_relus(order) if fast and not training and upto is None else {}
        first, end = span or (0, stop)
        for i in order:
            if not first <= i < end:
                continue
            layer = self.layers[i]
            if i in pooled:  # this conv does the max pool after it too
                x, caches[i] = layer.forward_pooled(x, training, relu=i in relus)
                caches[pooled[i]] = POOLED_BY_CONV
            elif caches[i] is POOLED_BY_CONV or i in relus.values():
                continue
            elif i in late.values():
                x, caches[i] = layer.forward(x, training=training, rng=rng, add_bias=False)
            else:
                x, caches[i] = layer.forward(x, training=training, rng=rng)
            if i in late:
                x = x + self.layers[late[i]].params["b"].reshape(-1)
        if training and commit:
            self.commit_statistics(caches)
        return x, caches

    def _order(self, fast: bool) -> list[int]:
        order = list(range(len(self.layers)))
        if fast:
            for i in range(len(order) - 1):
                if type(self.layers[order[i]]) is ReLU and type(self.layers[order[i + 1]]) is MaxPool2D:
                    order[i], order[i + 1] = order[i + 1], order[i]
        return order

    def prepare(self, run=None) -> None:
        """Let layers precompute what depends only on their weights (call after every update,
        before threads share the weights; a layer whose cache is stale recomputes it anyway)."""
        for layer in self.layers:
            if hasattr(layer, "prepare"):
                layer.prepare(run)

    def _pooled_convs(self, order: list[int]) -> dict[int, int]:
        """``{conv index: pool index}`` for each conv that does the max pool after it in
        ``order`` itself (``Conv2D.pools_with``)."""
        return {a: b for a, b in zip(order, order[1:])
                if type(self.layers[a]) is Conv2D and self.layers[a].pools_with(self.layers[b])}

    def _fused_relus(self, order: list[int]) -> dict[int, int]:
        """``{conv index: relu index}`` for each conv that pools itself and is followed in
        ``order`` by a relu right after that pool (an evaluation's: no mask is kept)."""
        pooled = self._pooled_convs(order)
        after = dict(zip(order, order[1:]))
        return {conv: after[pool] for conv, pool in pooled.items()
                if pool in after and type(self.layers[after[pool]]) is ReLU}

    def _late_biases(self, order: list[int]) -> dict[int, int]:
        """``{max pool index: conv index}`` for each biased conv directly followed in ``order``
        by a max pool (one that it does not pool itself)."""
        late = {}
        pooled = self._pooled_convs(order)
        for a, b in zip(order, order[1:]):
            conv, pool = self.layers[a], self.layers[b]
            if type(conv) is Conv2D and conv.bias and type(pool) is MaxPool2D and a not in pooled:
                late[b] = a
        return late

    def commit_statistics(self, caches: list) -> None:
        for layer, cache in zip(self.layers, caches):
            if cache is not None and hasattr(layer, "update_running"):
                layer.update_running(cache)

    def backward(self, dout: np.ndarray, caches: list, stop: int = 0, fast=False, later=None):
        """Backpropagate ``dout`` from the last cached layer down to layer ``stop``.

        Returns ``(grads, dx)``: gradients keyed like ``params()`` and the gradient at the
        input of layer ``stop`` (None for layer 0, whose input needs none). ``fast`` must match
        the forward pass that made ``caches``. ``later(work)``, when given, receives the
        weight gradients of the layers that can defer them, as functions that fill in their
        entries of ``grads`` when run (by any thread, before ``grads`` is read).
        """
        grads = {}

        def filler(i):
            def hand_over(weight_gradients):
                def fill():
                    for k, g in weight_gradients().items():
                        grads[f"{i}.{k}"] = g
                later(fill)
            return hand_over

        whole = len(caches) == len(self.layers) and stop == 0
        order = self._order(fast) if whole else list(range(len(caches)))
        for i in reversed(order):
            if i < stop:
                continue
            layer = self.layers[i]
            if later is not None and layer.defers_weight_grads:
                dout, layer_grads = layer.backward(dout, caches[i], filler(i))
            else:
                dout, layer_grads = layer.backward(dout, caches[i])
            for k, g in layer_grads.items():
                grads[f"{i}.{k}"] = g
        return grads, dout

    def predict_logits(self, x: np.ndarray, batch_size: int = 1000, transform=None, workers=None) -> np.ndarray:
        """Evaluation-mode logits for a whole array, in batches; ``transform`` maps a uint8 batch.

        Batches are capped at ``eval_chunk()`` images, so that a chunk's intermediate arrays
        stay in cache (the numbers do not depend on the chunk) and an im2col matrix stays small
        (627 MB for LeNet's second conv at 1,000 images). The chunks run on ``workers`` threads
        (default: one per core); the dense head after the last image-shaped layer
        (``head_start``) runs on fixed runs of chunks, about ``HEAD_IMAGES`` images at once.
        """
        batch_size = min(batch_size, self.eval_chunk())
        self.prepare()
        head, end = self.head_start(), len(self.layers)
        # the dense head runs on several chunks at once: it then reads its weights (LeNet's
        # first dense: 1.6 MB) once per HEAD_IMAGES images, not once per chunk
        group = max(1, HEAD_IMAGES // batch_size) if head < end else 1

        def features(start):
            batch = x[start:start + batch_size]
            return self.forward(transform(batch) if transform else batch, fast=True, span=(0, head))[0]

        def logits(batch):
            return self.forward(batch, fast=True, span=(head, end))[0] if head < end else batch

        outs = map_grouped_in_threads(features, logits, range(0, len(x), batch_size), group, workers)
        return np.concatenate(outs) if outs else np.zeros((0,) + self.output_shape, dtype=np.float32)

    def head_start(self) -> int:
        """The first layer of the head that sees flat vectors only (LeNet: its first dense),
        ``len(layers)`` if the last layer's input is an image."""
        head = len(self.layers)
        while head > 0 and len(self.layers[head - 1].input_shape) == 1:
            head -= 1
        return head

    def eval_chunk(self) -> int:
        """Images per evaluation chunk: EVAL_CHUNK_BYTES over the busiest layer's bytes per
        image, a multiple of 16 between 16 and 256 (LeNet: 48; quick.yaml: 96; the notebook: 256)."""
        busiest = max((layer.working_values() for layer in self.layers), default=1)
        per_image = busiest * next((p.itemsize for p in self.params().values()), 4)
        return int(min(256, max(16, EVAL_CHUNK_BYTES // per_image // 16 * 16)))

    def train_step_gradients(self, x, y, rng=None, label_smoothing=0.0, commit=True, share=1.0, later=None):
        """Forward, loss and backward for one batch: ``(loss, correct, grads, caches)``.

        ``share`` scales the gradients (not the loss): a part of a batch passes its fraction of
        the batch, so that the parts' gradients simply add up. Overflow is not warned about
        here: the trainer checks the loss and gradients itself. ``later``: as in ``backward``
        (``grads`` is complete only once the work handed to it has run).
        """
        with np.errstate(over="ignore", invalid="ignore"):  # per thread: workers need it too
            logits, caches = self.forward(x, training=True, rng=rng, commit=commit, fast=True)
            loss, dlogits, _ = softmax_cross_entropy(logits, y, label_smoothing)
            if share != 1.0:
                dlogits *= dlogits.dtype.type(share)
            grads, _ = self.backward(dlogits, caches, fast=True, later=later)
        correct = int((logits.argmax(axis=1) == y).sum())
        return loss, correct, grads, caches

    def locate_non_finite(self, x, y, rng=None, label_smoothing=0.0) -> str:
        """Re-run a batch checking every layer, to say where a NaN or infinity first appeared."""
        with np.errstate(all="ignore"):
            return self._locate_non_finite(x, y, rng, label_smoothing)

    def _locate_non_finite(self, x, y, rng, label_smoothing) -> str:
        out = x
        caches = []
        for i, layer in enumerate(self.layers):
            out, cache = layer.forward(out, training=True, rng=rng)
            caches.append(cache)
            if not np.all(np.isfinite(out)):
                return f"forward of layer {i} ({layer.name})"
        loss, dout, _ = softmax_cross_entropy(out, y, label_smoothing)
        if not np.isfinite(loss):
            return "the loss"
        for i in range(len(self.layers) - 1, -1, -1):
            dout, grads = self.layers[i].backward(dout, caches[i])
            bad = [k for k, g in grads.items() if not np.all(np.isfinite(g))]
            if bad or (dout is not None and not np.all(np.isfinite(dout))):
                return f"backward of layer {i} ({self.layers[i].name})"
        for i, layer in enumerate(self.layers):
            if any(not np.all(np.isfinite(p)) for p in layer.params.values()):
                return f"the weights of layer {i} ({layer.name})"
        return "no layer (the batch is finite when re-run)"


def _indexed(err: LayerConfigError, index: int) -> LayerConfigError:
    err.index = index
    return err


def check_finite(loss: float, grads: dict) -> bool:
    """True when the loss and every gradient are finite (one reduction per array)."""
    if not np.isfinite(loss):
        return False
    return all(np.isfinite(np.sum(g)) for g in grads.values())


__all__ = ["Sequential", "check_finite", "NonFiniteError"]
