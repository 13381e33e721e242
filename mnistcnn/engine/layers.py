"""Layer classes: parameters, gradients and config, thin over the kernels in ``functional``.

Every layer follows one interface (CS231n's, with Keras's config round-trip):

- ``build(input_shape, rng)`` creates the parameters and returns the output shape
  (shapes exclude the batch axis);
- ``forward(x, training)`` returns the output and keeps what the backward pass needs;
  ``backward(dout)`` returns the gradient at the input and keeps the parameters' gradients
  in ``grads``;
- both are written once, as pure functions of the layer's parameters:
  ``forward_pass(x, training, rng) -> (out, cache)`` and ``backward_pass(dout, cache) ->
  (dx, grads)``, which the fast plan (``fast.plan``) calls from several threads at once;
- ``get_config()`` / ``from_config()`` round-trip through the registry's ``type:`` name.
"""
from __future__ import annotations

import math

import numpy as np

from . import functional as F
from .layer_arguments import (CONV_ALGORITHMS, INITS, LayerConfigError, ShapeError, boolean, check_weight_count,
                              choice, integer, number)

LAYERS: dict[str, type["Layer"]] = {}  # a config's ``type:`` name -> its class


def register(name: str):
    """Class decorator: make a layer buildable from a config with ``type: name``."""

    def add(cls):
        cls.type_name = name
        LAYERS[name] = cls
        return cls

    return add


def init_weights(rng: np.random.Generator, shape, fan_in: int, fan_out: int, scheme: str) -> np.ndarray:
    """He (normal, for ReLU), Glorot (uniform, for tanh/sigmoid) or LeCun (normal) weights."""
    if scheme == "he":
        return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
    if scheme == "lecun":
        return rng.normal(0.0, math.sqrt(1.0 / fan_in), size=shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


class Layer:
    """Base layer: no parameters, shape-preserving."""

    type_name = "layer"
    # in evaluation each output value depends only on the input value at the same position (and
    # the channel's parameters), so a value can be followed through the layer (serve's page does)
    keeps_positions = False

    def __init__(self, name: str | None = None):
        self.name = name
        self.params: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}  # state that is saved but not trained
        self.input_shape: tuple | None = None
        self.output_shape: tuple | None = None
        # the model turns this off for the first layer: conv2d and dense then skip the GEMMs of
        # their input gradient; the other layers read no flag and always compute theirs
        self.needs_input_grad = True
        self.cache = None
        self.grads: dict[str, np.ndarray] = {}

    # -- config ---------------------------------------------------------------
    def arguments(self) -> dict:
        """The constructor arguments that define this layer (without name and type)."""
        return {}

    def get_config(self) -> dict:
        config = {"type": self.type_name, **self.arguments()}
        if self.name is not None:
            config["name"] = self.name
        return config

    @classmethod
    def from_config(cls, config: dict) -> "Layer":
        return cls(**config)

    # -- shapes ---------------------------------------------------------------
    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def build(self, input_shape: tuple, rng: np.random.Generator | None = None, dtype=np.float32) -> tuple:
        self.input_shape = tuple(input_shape)
        self.output_shape = self.compute_output_shape(self.input_shape)
        return self.output_shape

    def macs(self) -> int:
        """Multiply-accumulates per example in the forward pass."""
        return 0

    def num_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    # -- computation ----------------------------------------------------------
    def forward(self, x, training=False, rng=None):
        """The output for ``x``; keeps the cache for ``backward``. ``rng``: dropout's masks."""
        out, self.cache = self.forward_pass(x, training, rng)
        return out

    def backward(self, dout):
        """The gradient at the input; the parameters' gradients go to ``self.grads``."""
        dx, self.grads = self.backward_pass(dout, self.cache)
        return dx

    def forward_pass(self, x, training=False, rng=None):
        """``(out, cache)``: the layer's arithmetic, with no state kept."""
        raise NotImplementedError

    def backward_pass(self, dout, cache):
        """``(dx, grads)`` from a cache of ``forward_pass`` (dx None where not needed)."""
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.arguments().items())
        return f"{type(self).__name__}({args})"


@register("conv2d")
class Conv2D(Layer):
    """2-D convolution over NHWC input; W (f, f, C_prev, filters), b (1, 1, 1, filters).

    Forward: ``functional.conv_forward`` (an im2col matrix and one GEMM). Backward:
    ``functional.conv_backward`` (dW by a GEMM with that matrix, db by column sums of dZ, dA by a
    scatter-add).
    ``kernel`` is the notebook's f and ``filters`` its n_C; ``padding`` is a number, "valid" (0)
    or "same" (f // 2), and becomes the ``pad`` of the notebook's ``hparameters``.
    """

    def __init__(self, filters, kernel=3, stride=1, padding=0, init="he", bias=True, algorithm="auto", name=None):
        super().__init__(name)
        self.filters = integer("filters", filters, 1)
        self.kernel = integer("kernel", kernel, 1)
        self.stride = integer("stride", stride, 1)
        if padding == "same":
            if self.kernel % 2 == 0:
                raise LayerConfigError("padding", "padding 'same' needs an odd kernel; give an integer instead")
            self.padding = "same"
        elif padding == "valid":
            self.padding = "valid"
        else:
            self.padding = integer("padding", padding, 0)
        self.init = choice("init", init, INITS)
        self.bias = boolean("bias", bias)
        # im2col or the frequency domain: a choice for the fast plan, which computes the same
        self.algorithm = choice("algorithm", algorithm, CONV_ALGORITHMS)

    @property
    def pad(self) -> int:
        if self.padding == "same":
            return self.kernel // 2
        return 0 if self.padding == "valid" else self.padding

    def hparameters(self) -> dict:
        return {"stride": self.stride, "pad": self.pad}

    def arguments(self):
        return {"filters": self.filters, "kernel": self.kernel, "stride": self.stride, "padding": self.padding,
                "init": self.init, "bias": self.bias, "algorithm": self.algorithm}

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ShapeError("type", f"conv2d needs an image input (H, W, C), got shape {tuple(input_shape)}; "
                                     "put it before any flatten or dense layer")
        h, w, _ = input_shape
        n_h, n_w = (F.output_size(n, self.kernel, self.stride, self.pad) for n in (h, w))
        if n_h < 1 or n_w < 1:
            raise ShapeError("kernel", f"kernel {self.kernel} with padding {self.pad} does not fit its {h}x{w} "
                                       f"input; use a kernel of at most {min(h, w) + 2 * self.pad}")
        return (n_h, n_w, self.filters)

    def build(self, input_shape, rng=None, dtype=np.float32):
        out = super().build(input_shape, rng, dtype)
        c_prev = input_shape[2]
        f = self.kernel
        check_weight_count("filters", f * f * c_prev * self.filters)
        rng = rng if rng is not None else np.random.default_rng(0)
        W = init_weights(rng, (f, f, c_prev, self.filters), f * f * c_prev, f * f * self.filters, self.init)
        self.params = {"W": W.astype(dtype)}
        if self.bias:
            self.params["b"] = np.zeros((1, 1, 1, self.filters), dtype=dtype)
        return out

    def macs(self):
        h, w, c = self.output_shape
        return h * w * c * self.kernel * self.kernel * self.input_shape[2]

    def forward_pass(self, x, training=False, rng=None):
        return F.conv_forward(x, self.params["W"], self.params.get("b"), self.hparameters())

    def backward_pass(self, dout, cache):
        # the model's first layer has no use for the gradient at the images: it skips it
        dx, dW, db = F.conv_backward(dout, cache, self.needs_input_grad)
        return dx, self.named_gradients(dW, db)

    def named_gradients(self, dW, db) -> dict:
        return {"W": dW, "b": db} if self.bias else {"W": dW}


class _Pool(Layer):
    """Pooling of NHWC input, no parameters: ``size`` is the notebook's ``f`` and ``stride`` its
    stride (default ``size``: windows side by side); ``functional.pool_forward`` and
    ``pool_backward`` compute it in ``mode`` (each subclass's)."""

    def __init__(self, size=2, stride=None, name=None):
        super().__init__(name)
        self.size = integer("size", size, 1)
        self.stride = self.size if stride is None else integer("stride", stride, 1)

    def arguments(self):
        return {"size": self.size, "stride": self.stride}

    def hparameters(self):
        return {"f": self.size, "stride": self.stride}

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ShapeError("type", f"{self.type_name} needs an image input (H, W, C), got {tuple(input_shape)}")
        h, w, c = input_shape
        n_h, n_w = F.output_size(h, self.size, self.stride), F.output_size(w, self.size, self.stride)
        if n_h < 1 or n_w < 1:
            raise ShapeError("size", f"pool size {self.size} does not fit its {h}x{w} input; use at most {min(h, w)}")
        return (n_h, n_w, c)

    def forward_pass(self, x, training=False, rng=None):
        return F.pool_forward(x, self.hparameters(), mode=self.mode)

    def backward_pass(self, dout, cache):
        return F.pool_backward(dout, cache, mode=self.mode), {}


@register("maxpool2d")
class MaxPool2D(_Pool):
    """The maximum of each size x size window, stepping by stride (default: size)."""

    mode = "max"


@register("avgpool2d")
class AvgPool2D(_Pool):
    """The mean of each size x size window, stepping by stride (default: size)."""

    mode = "average"


@register("relu")
class ReLU(Layer):
    """max(x, 0)."""

    keeps_positions = True

    def forward_pass(self, x, training=False, rng=None):
        return np.maximum(x, 0), x

    def backward_pass(self, dout, cache):
        # d(max(x, 0))/dx is 1 where x > 0, else 0; a fresh array: dout is not edited
        return dout * (cache > 0), {}


@register("leaky_relu")
class LeakyReLU(Layer):
    """x where x > 0, else alpha * x."""

    keeps_positions = True

    def __init__(self, alpha=0.01, name=None):
        super().__init__(name)
        self.alpha = number("alpha", alpha, 0.0, 1.0)

    def arguments(self):
        return {"alpha": self.alpha}

    def forward_pass(self, x, training=False, rng=None):
        x = F.as_floating(x)  # in an integer type alpha * x would truncate
        return np.where(x > 0, x, x * x.dtype.type(self.alpha)), x

    def backward_pass(self, dout, cache):
        return np.where(cache > 0, dout, dout * dout.dtype.type(self.alpha)), {}


@register("tanh")
class Tanh(Layer):
    """tanh(x)."""

    keeps_positions = True

    def forward_pass(self, x, training=False, rng=None):
        out = np.tanh(F.as_floating(x))  # NumPy's tanh of uint8 is float16
        return out, out

    def backward_pass(self, dout, cache):
        return dout * (1 - cache * cache), {}  # tanh'(x) = 1 - tanh(x)^2: the output (the cache) suffices


@register("sigmoid")
class Sigmoid(Layer):
    """1 / (1 + exp(-x))."""

    keeps_positions = True

    def forward_pass(self, x, training=False, rng=None):
        x = F.as_floating(x)  # -abs(x) of an unsigned integer wraps round to a large number
        # exp of a non-positive number only, so neither branch can overflow
        exp_neg_abs = np.exp(-np.abs(x))
        out = np.where(x >= 0, 1 / (1 + exp_neg_abs), exp_neg_abs / (1 + exp_neg_abs)).astype(x.dtype, copy=False)
        return out, out

    def backward_pass(self, dout, cache):
        return dout * cache * (1 - cache), {}  # sigmoid' = sigmoid (1 - sigmoid): the output (the cache) suffices


@register("flatten")
class Flatten(Layer):
    """Each example as one vector, (H, W, C) in that order: what a dense layer takes."""

    def compute_output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def forward_pass(self, x, training=False, rng=None):
        return x.reshape(x.shape[0], -1), x.shape

    def backward_pass(self, dout, cache):
        return dout.reshape(cache), {}


@register("dense")
class Dense(Layer):
    """Fully connected: W (in, units), b (units,)."""

    def __init__(self, units, init="he", bias=True, name=None):
        super().__init__(name)
        self.units = integer("units", units, 1)
        self.init = choice("init", init, INITS)
        self.bias = boolean("bias", bias)

    def arguments(self):
        return {"units": self.units, "init": self.init, "bias": self.bias}

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ShapeError("type", f"dense needs a flat input, got shape {tuple(input_shape)}; "
                                     "add {type: flatten} before it")
        return (self.units,)

    def build(self, input_shape, rng=None, dtype=np.float32):
        out = super().build(input_shape, rng, dtype)
        rng = rng if rng is not None else np.random.default_rng(0)
        fan_in = input_shape[0]
        check_weight_count("units", fan_in * self.units)
        self.params = {"W": init_weights(rng, (fan_in, self.units), fan_in, self.units, self.init).astype(dtype)}
        if self.bias:
            self.params["b"] = np.zeros(self.units, dtype=dtype)
        return out

    def macs(self):
        return self.input_shape[0] * self.units

    def forward_pass(self, x, training=False, rng=None):
        out = x @ self.params["W"]
        if self.bias:
            out += self.params["b"]
        return out, x

    def backward_pass(self, dout, cache):
        return (self.input_gradient(dout) if self.needs_input_grad else None), self.weight_gradients(dout, cache)

    def input_gradient(self, dout):
        return dout @ self.params["W"].T

    def weight_gradients(self, dout, x) -> dict:
        grads = {"W": x.T @ dout}
        if self.bias:  # a row per example: few enough for NumPy's own sum (F.sum_rows is for conv's many)
            grads["b"] = dout.sum(axis=0)
        return grads


@register("dropout")
class Dropout(Layer):
    """Inverted dropout: scales the kept units by 1/(1-rate) in training; identity in evaluation."""

    keeps_positions = True

    def __init__(self, rate=0.5, name=None):
        super().__init__(name)
        self.rate = number("rate", rate, 0.0, 1.0, high_open=True)

    def arguments(self):
        return {"rate": self.rate}

    def forward_pass(self, x, training=False, rng=None):
        x = F.as_floating(x)  # an integer mask would scale by int(1 / (1 - rate)), 1 for rates below 0.5
        if not training or self.rate == 0.0:
            return x, None
        if rng is None:
            raise ValueError("dropout in training needs an explicit np.random.Generator")
        kept = rng.random(x.shape, dtype=np.float32 if x.dtype == np.float32 else np.float64) >= self.rate
        mask = kept.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.rate))
        return x * mask, mask

    def backward_pass(self, dout, cache):
        return (dout if cache is None else dout * cache), {}


@register("batchnorm")
class BatchNorm(Layer):
    """Batch normalisation per channel; running = momentum * running + (1 - momentum) * batch, as Keras.

    The statistics are over every axis but the last (channels of NHWC, units of dense). Training
    uses the batch's statistics and updates the running averages; evaluation uses the running
    averages. gamma and beta have the shape of the last axis. PyTorch's ``momentum`` is 1 minus
    this one.
    """

    keeps_positions = True

    def __init__(self, momentum=0.9, eps=1e-5, name=None):
        super().__init__(name)
        self.momentum = number("momentum", momentum, 0.0, 1.0, high_open=True)
        self.eps = number("eps", eps, 0.0, 1.0, low_open=True)

    def arguments(self):
        return {"momentum": self.momentum, "eps": self.eps}

    def build(self, input_shape, rng=None, dtype=np.float32):
        out = super().build(input_shape, rng, dtype)
        c = input_shape[-1]
        self.params = {"gamma": np.ones(c, dtype=dtype), "beta": np.zeros(c, dtype=dtype)}
        self.buffers = {"running_mean": np.zeros(c, dtype=dtype), "running_var": np.ones(c, dtype=dtype)}
        return out

    def macs(self):
        return int(np.prod(self.output_shape))

    def forward_pass(self, x, training=False, rng=None):
        gamma, beta = self.params["gamma"], self.params["beta"]
        x = F.as_floating(x, gamma)  # an integer batch's mean would be cast back to its integer type
        if not training:  # the cache is the input itself (no copy): a backward in evaluation needs it
            # gamma (x - mean) inv_std + beta as one scale and one shift of x
            inv_std = self.running_inv_std()
            scale = (gamma * inv_std).astype(x.dtype)
            return x * scale + (beta - self.buffers["running_mean"] * gamma * inv_std).astype(x.dtype), x
        rows = x.reshape(-1, x.shape[-1])
        count = rows.shape[0]
        mean = F.sum_rows(rows) / count
        var = F.sum_rows((rows - mean) ** 2) / count
        inv_std = (1.0 / np.sqrt(var + self.eps)).astype(x.dtype)
        x_hat = (rows - mean) * inv_std
        out = gamma * x_hat + beta
        return out.reshape(x.shape), (x_hat.reshape(x.shape), inv_std, mean, var)

    def forward(self, x, training=False, rng=None):
        out = super().forward(x, training, rng)
        if training:  # every training batch moves the running averages towards its own statistics
            _, _, mean, var = self.cache
            self.update_running_statistics(mean, var, x.size // x.shape[-1])
        return out

    def running_inv_std(self) -> np.ndarray:
        """1 / sqrt(running_var + eps): what an evaluation divides by, forward and backward."""
        return 1.0 / np.sqrt(self.buffers["running_var"] + self.eps)

    def update_running_statistics(self, mean, var, count: int) -> None:
        """running = momentum * running + (1 - momentum) * batch, for a batch's mean and (biased)
        variance over ``count`` values."""
        momentum = self.momentum
        dtype = self.buffers["running_mean"].dtype
        self.buffers["running_mean"] = (momentum * self.buffers["running_mean"] + (1 - momentum) * mean).astype(dtype)
        # the unbiased variance (n - 1) for the running estimate, as PyTorch keeps it (Keras 3 keeps the biased one)
        unbiased = var * (count / max(count - 1, 1))
        self.buffers["running_var"] = (momentum * self.buffers["running_var"] + (1 - momentum) * unbiased).astype(dtype)

    def backward_pass(self, dout, cache):
        if isinstance(cache, np.ndarray):  # an evaluation forward keeps its input alone, not a tuple
            return self.evaluation_backward(dout, cache)
        x_hat, inv_std = cache[:2]
        rows = dout.reshape(-1, dout.shape[-1])
        x_hat = x_hat.reshape(rows.shape)
        dbeta = F.sum_rows(rows)
        dgamma = F.sum_rows(rows * x_hat)
        count = rows.shape[0]
        # the mean and variance depend on every x of the batch, hence the two mean terms:
        # dx = gamma * inv_std * (dout - mean(dout) - x_hat * mean(dout * x_hat))
        dx = self.params["gamma"] * inv_std * (rows - dbeta / count - x_hat * (dgamma / count))
        return dx.reshape(dout.shape).astype(dout.dtype, copy=False), {"gamma": dgamma, "beta": dbeta}

    def evaluation_backward(self, dout, x):
        """``(dx, grads)`` of the evaluation forward: a fixed map per channel with the running
        statistics, y = gamma * x_hat + beta, x_hat = (x - running_mean) * inv_std."""
        inv_std = self.running_inv_std()
        x_hat = ((x - self.buffers["running_mean"]) * inv_std).reshape(-1, x.shape[-1])
        rows = dout.reshape(x_hat.shape)
        grads = {"gamma": F.sum_rows(rows * x_hat), "beta": F.sum_rows(rows)}
        return (dout * (self.params["gamma"] * inv_std).astype(dout.dtype)), grads


def unknown_layer_type(kind, hint: str = "") -> str:
    """The error for a layer type the engine lacks; ``hint``: a did-you-mean, ending in "; "."""
    return f"unknown layer type {kind!r}; {hint}valid types: {', '.join(sorted(LAYERS))}"


def layer_from_config(config: dict) -> "Layer":
    config = dict(config)
    kind = config.pop("type", None)
    if kind not in LAYERS:
        raise LayerConfigError("type", unknown_layer_type(kind))
    return LAYERS[kind].from_config(config)
