"""What a layer's config may say, checked: the typed errors that name the argument at fault,
the argument checks every layer's constructor calls, and the ``activation:`` shorthand that a
model's config expands into a layer of its own. Apart from ``layers``, so that a learner reading
it meets the layers first.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import MnistCnnError


class LayerConfigError(MnistCnnError, exit_code=2):
    """A layer argument is invalid; ``key`` names it so the config loader can give its path."""

    def __init__(self, key: str | None, message: str):
        super().__init__(message)
        self.key = key
        self.index = None  # the layer's place in the model, once known

    def at(self, index: int) -> "LayerConfigError":
        """This error, for the layer at ``index`` of a model."""
        self.index = index
        return self


class ShapeError(LayerConfigError):
    """A layer does not fit the shape its input has."""


# As in Keras, a conv2d or dense layer may name its activation; it becomes a layer of its own after it.
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")
ACTIVATED_LAYERS = ("conv2d", "dense")
SOFTMAX_IN_LOSS = ("softmax is applied by the loss (cross-entropy takes the logits); remove {what}: the model "
                   "ends with the last dense layer")


def split_activation(spec: dict) -> list[dict]:
    """``{type: dense, units: 128, activation: relu}`` as the dense layer's spec and then
    ``{type: relu}``; a spec without an activation (or with ``linear``) as itself."""
    if "activation" not in spec:
        return [spec]
    spec = dict(spec)
    activation = spec.pop("activation")
    if spec.get("type") not in ACTIVATED_LAYERS:
        raise LayerConfigError("activation", f"{spec.get('type')} takes no activation (only "
                                             f"{' and '.join(ACTIVATED_LAYERS)} do); list it as a layer after it")
    if activation == "softmax":
        raise LayerConfigError("activation", SOFTMAX_IN_LOSS.format(what="it"))
    if activation in ("linear", None):
        return [spec]
    if activation not in ACTIVATIONS:
        raise LayerConfigError("activation", f"must be one of {', '.join(ACTIVATIONS)} or linear; got {activation!r}")
    return [spec, {"type": activation}]


def integer(key, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise LayerConfigError(key, f"{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def boolean(key, value):
    if not isinstance(value, bool):
        raise LayerConfigError(key, f"{key} must be true or false, got {value!r}")
    return value


def number(key, value, low, high, low_open=False, high_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LayerConfigError(key, f"{key} must be a number, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise LayerConfigError(key, f"{key} must be in {lo}{low}, {high}{hi}, got {value!r}")
    return float(value)


def choice(key, value, choices):
    if value not in choices:
        raise LayerConfigError(key, f"{key} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


INITS = ("he", "glorot", "lecun")
MAX_WEIGHTS = 50_000_000  # per layer: 200 MB of float32, far beyond any MNIST net, far below a frozen machine


def check_weight_count(key: str, count: int) -> None:
    """Refuse a layer too big to allocate before trying (a typo like units: 1000000)."""
    if count > MAX_WEIGHTS:
        raise ShapeError(key, f"this layer would have {count:,} weights; at most {MAX_WEIGHTS:,} per layer are "
                              f"supported: lower {key}")


# conv2d's algorithm (and model.conv_algorithm): im2col or the frequency domain, which the fast
# plan chooses between; a config key, so it is checked with the others
CONV_ALGORITHMS = ("auto", "im2col", "fft-gemm")
