"""Sequential model: a list of layers built from config specs, with shape inference."""
from __future__ import annotations

import numpy as np

from ..errors import UsageError
from .layer_arguments import LayerConfigError, split_activation
from .layers import BatchNorm, Layer, layer_from_config
from .losses import right_answers, softmax_cross_entropy


def layer_key(index: int, name: str) -> str:
    """The key of layer ``index``'s array ``name`` in ``params()``, its gradients and its buffers."""
    return f"{index}.{name}"


class Sequential:
    """Layers applied in order to NHWC batches; shapes exclude the batch axis."""

    def __init__(self, layers: list[Layer], input_shape, rng: np.random.Generator | None = None,
                 dtype=np.float32):
        self.layers = layers
        self.spec_index = list(range(len(layers)))  # the config entry each layer came from (see from_config)
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
                raise err.at(index)
        if layers:
            layers[0].needs_input_grad = False  # nothing upstream wants the image's gradient
        self.output_shape = shape

    @classmethod
    def from_config(cls, specs: list[dict], input_shape, rng=None, dtype=np.float32) -> "Sequential":
        """The model of a config's layer list; an error's index is the spec's place in ``specs``
        (an ``activation`` adds a layer, so the model's own numbering can run ahead of it)."""
        layers, spec_index = [], []  # spec_index[i]: the spec that made layers[i]
        for index, spec in enumerate(specs):
            try:
                layers.extend(layer_from_config(each) for each in split_activation(spec))
            except TypeError as err:  # an argument the layer does not take
                raise LayerConfigError(None, str(err)).at(index) from None
            except LayerConfigError as err:
                raise err.at(index)
            spec_index.extend([index] * (len(layers) - len(spec_index)))
        try:
            model = cls(layers, input_shape, rng, dtype)
        except LayerConfigError as err:
            raise err.at(spec_index[err.index]) if err.index is not None else err
        model.spec_index = spec_index
        return model

    def batchnorm_of_one_value(self) -> int | None:
        """The config entry (``model.layers[i]``) of the first batchnorm that normalises one value
        per channel of an image (a dense one, or a conv one on a 1x1 map), whose variance over a
        batch of one image is 0; None without one."""
        return next((self.spec_index[index] for index, layer in enumerate(self.layers)
                     if isinstance(layer, BatchNorm) and int(np.prod(layer.input_shape[:-1])) == 1), None)

    def get_config(self) -> list[dict]:
        return [layer.get_config() for layer in self.layers]

    # -- parameters -------------------------------------------------------------
    def _keyed(self, arrays_of) -> dict[str, np.ndarray]:
        return {layer_key(index, name): array for index, layer in enumerate(self.layers)
                for name, array in arrays_of(layer).items()}

    def params(self) -> dict[str, np.ndarray]:
        """Trainable arrays keyed ``"<layer index>.<name>"`` (live references, updated in place)."""
        return self._keyed(lambda layer: layer.params)

    def buffers(self) -> dict[str, np.ndarray]:
        return self._keyed(lambda layer: layer.buffers)

    def state_slots(self):
        """``(state key, the dict that holds the array, its name there)`` for every parameter and
        buffer; the keys are ``"param."`` or ``"buffer."`` and ``layer_key``, as checkpoints store them."""
        for index, layer in enumerate(self.layers):
            for store, kind in ((layer.params, "param"), (layer.buffers, "buffer")):
                for name in store:
                    yield f"{kind}.{layer_key(index, name)}", store, name

    def state_dict(self) -> dict[str, np.ndarray]:
        return {key: store[name].copy() for key, store, name in self.state_slots()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy ``state``'s arrays into the layers' own, as PyTorch's ``load_state_dict`` does: a
        ``params()`` dict taken before sees the loaded values. The caller has checked names and shapes."""
        for key, store, name in self.state_slots():
            store[name][...] = state[key]

    def num_params(self) -> int:
        return sum(layer.num_params() for layer in self.layers)

    def macs(self) -> int:
        return sum(layer.macs() for layer in self.layers)

    def layer_index(self, key) -> int:
        """The index of layer ``key``: an index (negative counts from the end), a layer's name, or a
        layer type that names exactly one layer (``dense`` in a net with one dense layer).

        UsageError, in one line without the model's location, when ``key`` selects no layer or
        several: it lists the ones to choose from."""
        if isinstance(key, str) and key.lstrip("-").isdigit():
            key = int(key)
        count = len(self.layers)
        if isinstance(key, int):
            if -count <= key < count:
                return key % count
            matches = []
        else:
            # a name wins over a type: a layer may be named after another layer's type
            matches = ([i for i, layer in enumerate(self.layers) if layer.name == key]
                       or [i for i, layer in enumerate(self.layers) if layer.type_name == key])
            if len(matches) == 1:
                return matches[0]

        def listed(indices) -> str:
            return ", ".join(f"{i}:{self.layers[i].name}" for i in indices)

        if matches:
            raise UsageError(f"{len(matches)} layers are {key}: {listed(matches)}; give one's index or name")
        types = [layer.type_name for layer in self.layers]
        unique = [kind for kind in dict.fromkeys(types) if types.count(kind) == 1]
        raise UsageError(f"no layer {str(key)!r} in this model; valid: {listed(range(count))}"
                         + (f", or a type that names one layer: {', '.join(unique)}" if unique else ""))

    # -- computation ------------------------------------------------------------
    def forward(self, x: np.ndarray, training=False, rng=None) -> np.ndarray:
        """Run every layer in turn; in training each keeps what its backward pass needs."""
        for layer in self.layers:
            x = layer.forward(x, training, rng)
        return x

    def backward(self, dout: np.ndarray):
        """Backpropagate ``dout`` through every layer in reverse; gradients land on the layers.
        Returns the gradient at the input, or None where the first layer is a conv2d or dense
        layer: the model turns its ``needs_input_grad`` off, as nothing upstream of the images
        wants it (turn it on for one, as inspect-layer and serve do). The other layers compute
        theirs whatever that flag says: each one's is the dout of the layer before it."""
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def gradients(self) -> dict[str, np.ndarray]:
        """The last backward pass's gradients, keyed like ``params()``."""
        return self._keyed(lambda layer: layer.grads)

    def loss_and_gradients(self, x, y, rng=None, label_smoothing=0.0):
        """One training step's arithmetic: ``(loss, correct, grads)`` for a batch."""
        logits = self.forward(x, training=True, rng=rng)
        loss, dlogits = softmax_cross_entropy(logits, y, label_smoothing)
        self.backward(dlogits)
        return loss, int(right_answers(logits, y).sum()), self.gradients()

    def predict_logits(self, x: np.ndarray, batch_size: int = 256, transform=None) -> np.ndarray:
        """Evaluation-mode logits for a whole array, in batches; ``transform`` maps a batch."""
        outs = [self.forward(transform(x[i:i + batch_size]) if transform else x[i:i + batch_size])
                for i in range(0, len(x), batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0,) + self.output_shape, dtype=np.float32)


def recompute_batchnorm(model: Sequential, batches, rng: np.random.Generator, forward=None) -> None:
    """Set every batchnorm layer's running statistics to their mean over ``batches``, for weights
    that were never trained as they are (averaged ones), as PyTorch's ``update_bn`` does.
    ``forward(x, rng)``: a training forward pass that folds a batch's statistics into the
    running ones (default: the model's own)."""
    norms = [layer for layer in model.layers if layer.type_name == "batchnorm"]
    if not norms:
        return
    forward = forward or (lambda x, rng: model.forward(x, training=True, rng=rng))
    momentums = [layer.momentum for layer in norms]
    for count, x in enumerate(batches):
        for layer in norms:
            layer.momentum = count / (count + 1)  # folds batch number ``count`` into a plain mean
        forward(x, rng)
    for layer, momentum in zip(norms, momentums):
        layer.momentum = momentum


def locate_non_finite(model: Sequential, x, y, rng=None, label_smoothing=0.0) -> str:
    """Re-run a batch layer by layer to say where a NaN or infinity first appeared."""
    with np.errstate(all="ignore"):
        out, caches = x, []
        for i, layer in enumerate(model.layers):
            out, cache = layer.forward_pass(out, training=True, rng=rng)
            caches.append(cache)
            if not np.all(np.isfinite(out)):
                return f"forward of layer {i} ({layer.name})"
        loss, dout = softmax_cross_entropy(out, y, label_smoothing)
        if not np.isfinite(loss):
            return "the loss"
        for i in reversed(range(len(model.layers))):
            dout, grads = model.layers[i].backward_pass(dout, caches[i])
            if any(not np.all(np.isfinite(g)) for g in grads.values()) or (
                    dout is not None and not np.all(np.isfinite(dout))):
                return f"backward of layer {i} ({model.layers[i].name})"
    for i, layer in enumerate(model.layers):
        if any(not np.all(np.isfinite(p)) for p in layer.params.values()):
            return f"the weights of layer {i} ({layer.name})"
    return "no layer (the batch is finite when re-run)"


def check_finite(loss: float, grads: dict) -> bool:
    """True when the loss and every gradient are finite (one reduction per array)."""
    if not np.isfinite(loss):
        return False
    return all(np.isfinite(np.sum(g)) for g in grads.values())


__all__ = ["Sequential", "check_finite", "locate_non_finite"]
