"""Every layer: backward against centred finite differences (float64), in training and in evaluation;
conv and pool layers, every option, against the loop reference; config round-trip."""

import numpy as np
import pytest

from mnistcnn import config as cfg
from mnistcnn.engine.layer_arguments import LayerConfigError
from mnistcnn.engine.layers import LAYERS, layer_from_config
from mnistcnn.engine.model import Sequential
from mnistcnn.engine.reference import conv_backward_loop, conv_forward_loop, pool_backward_loop, pool_forward_loop

# (config, input shape without batch); inputs are kept away from kinks (relu at 0)
CASES = [
    ({"type": "conv2d", "filters": 3, "kernel": 3, "stride": 1, "padding": 1}, (5, 6, 2)),
    ({"type": "conv2d", "filters": 2, "kernel": 2, "stride": 2, "padding": 0, "init": "glorot"}, (6, 5, 3)),
    ({"type": "conv2d", "filters": 2, "kernel": 3, "padding": "same", "bias": False}, (4, 4, 1)),
    ({"type": "maxpool2d", "size": 2}, (6, 6, 2)),
    ({"type": "maxpool2d", "size": 3, "stride": 2}, (7, 7, 2)),
    ({"type": "avgpool2d", "size": 2, "stride": 1}, (5, 5, 2)),
    ({"type": "relu"}, (4, 4, 2)),
    ({"type": "leaky_relu", "alpha": 0.1}, (4, 4, 2)),
    ({"type": "tanh"}, (3, 3, 2)),
    ({"type": "sigmoid"}, (3, 3, 2)),
    ({"type": "flatten"}, (3, 3, 2)),
    ({"type": "dense", "units": 4}, (7,)),
    ({"type": "dense", "units": 3, "init": "glorot", "bias": False}, (5,)),
    ({"type": "dropout", "rate": 0.3}, (4, 4, 2)),
    ({"type": "batchnorm"}, (3, 3, 4)),
    ({"type": "batchnorm", "momentum": 0.5}, (6,)),
]


def _input(shape, rng):
    x = rng.normal(size=(3,) + shape)
    x[np.abs(x) < 0.05] += 0.1  # no value sits on relu's kink
    return x


@pytest.mark.parametrize("config,shape", CASES, ids=[c["type"] + str(i) for i, (c, _) in enumerate(CASES)])
def test_layer_gradients_match_finite_differences(config, shape, numerical_gradient, relative_error):
    rng = np.random.default_rng(0)
    layer = layer_from_config(config)
    out_shape = layer.build(shape, rng, dtype=np.float64)
    x = _input(shape, rng)
    if config["type"] == "maxpool2d":
        x = x + np.linspace(0, 1e-3, x.size).reshape(x.shape)  # distinct values: no ties here
    layer.needs_input_grad = True
    out = layer.forward(x, training=True, rng=np.random.default_rng(7))
    assert out.shape == (3,) + out_shape
    dout = rng.normal(size=out.shape)
    dx = layer.backward(dout)

    def loss():  # same dropout mask every call: a fresh generator with the same seed
        return float(np.sum(layer.forward_pass(x, training=True, rng=np.random.default_rng(7))[0] * dout))

    assert relative_error(dx, numerical_gradient(loss, x)) < 1e-6
    assert set(layer.grads) == set(layer.params)
    for key, p in layer.params.items():
        assert relative_error(layer.grads[key], numerical_gradient(loss, p)) < 1e-6, key
    # the pure pass is what the stateful one keeps
    again, cache = layer.forward_pass(x, training=True, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(again, out)
    np.testing.assert_array_equal(layer.backward_pass(dout, cache)[0], dx)


@pytest.mark.parametrize("config,shape", CASES, ids=[c["type"] + str(i) for i, (c, _) in enumerate(CASES)])
def test_config_round_trip(config, shape):
    layer = layer_from_config(config)
    again = layer_from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    assert type(again) is type(layer)
    for key, value in config.items():
        if key != "type":
            assert layer.get_config()[key] == value


def test_registry_covers_the_named_layers():
    for name in ["conv2d", "maxpool2d", "avgpool2d", "relu", "leaky_relu", "tanh", "sigmoid", "flatten", "dense",
                 "dropout", "batchnorm"]:
        assert name in LAYERS


def test_dropout_is_inverted_and_off_in_evaluation():
    layer = layer_from_config({"type": "dropout", "rate": 0.5})
    layer.build((1000,))
    x = np.ones((4, 1000), np.float32)
    assert layer.forward(x, training=False) is x
    out = layer.forward(x, training=True, rng=np.random.default_rng(0))
    assert set(np.unique(out)) <= {0.0, 2.0}
    assert abs(out.mean() - 1.0) < 0.05


def test_batchnorm_uses_running_statistics_in_evaluation():
    layer = layer_from_config({"type": "batchnorm", "momentum": 0.0})
    layer.build((2, 2, 3), dtype=np.float64)
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(50, 2, 2, 3))
    train_out = layer.forward(x, training=True)  # updates the running statistics
    assert np.allclose(train_out.mean(axis=(0, 1, 2)), 0, atol=1e-9)
    eval_out = layer.forward(x, training=False)
    # momentum 0: the running statistics are this batch's (variance unbiased)
    n = 200
    assert np.allclose(eval_out, train_out * np.sqrt((n - 1) / n), atol=1e-4)


def test_bad_arguments_name_their_key():
    with pytest.raises(LayerConfigError) as err:
        layer_from_config({"type": "conv2d", "filters": 0})
    assert err.value.key == "filters"
    with pytest.raises(LayerConfigError) as err:
        layer_from_config({"type": "conv3d"})
    assert "valid types" in str(err.value)


def test_sequential_shapes_params_and_macs(configs):
    lenet = cfg.load_config(configs / "lenet-plain.yaml")
    model = Sequential.from_config(lenet["model"]["layers"], (28, 28, 1))
    assert model.output_shape == (10,)
    assert [layer.output_shape for layer in model.layers][:3] == [(28, 28, 32), (28, 28, 32), (14, 14, 32)]
    assert model.num_params() == 832 + 51264 + 3136 * 128 + 128 + 1290
    assert model.macs() == 28 * 28 * 32 * 25 + 14 * 14 * 64 * 25 * 32 + 3136 * 128 + 1280
    assert model.get_config()[0]["filters"] == 32


def test_sequential_shape_errors_name_the_layer():
    with pytest.raises(LayerConfigError) as err:
        Sequential.from_config([{"type": "conv2d", "filters": 4, "kernel": 9}], (5, 5, 1))
    assert err.value.index == 0 and err.value.key == "kernel"
    with pytest.raises(LayerConfigError) as err:
        Sequential.from_config([{"type": "relu"}, {"type": "dense", "units": 3}], (5, 5, 1))
    assert err.value.index == 1 and "flatten" in str(err.value)


def test_model_gradient_end_to_end_float64(numerical_gradient, relative_error):
    from mnistcnn.engine.losses import softmax_cross_entropy
    specs = [{"type": "conv2d", "filters": 2, "kernel": 3, "padding": 1, "bias": False}, {"type": "batchnorm"},
             {"type": "tanh"}, {"type": "maxpool2d", "size": 2}, {"type": "flatten"}, {"type": "dense", "units": 3}]
    rng = np.random.default_rng(0)
    model = Sequential.from_config(specs, (4, 4, 1), rng, dtype=np.float64)
    x = rng.normal(size=(5, 4, 4, 1)) + np.linspace(0, 1e-2, 80).reshape(5, 4, 4, 1)
    y = np.array([0, 1, 2, 1, 0])
    _, _, grads = model.loss_and_gradients(x, y, label_smoothing=0.1)

    def loss():
        return softmax_cross_entropy(model.forward(x, training=True), y, 0.1)[0]

    for key, p in model.params().items():
        assert relative_error(grads[key], numerical_gradient(loss, p)) < 1e-6, key


def test_an_activation_becomes_a_layer_and_errors_count_the_specs_as_written():
    specs = [{"type": "conv2d", "filters": 4, "kernel": 3, "padding": 1, "activation": "tanh"},
             {"type": "dense", "units": 3, "activation": "linear"}]
    with pytest.raises(LayerConfigError) as err:  # the dense layer is the model's third, the second spec
        Sequential.from_config(specs, (5, 5, 1))
    assert err.value.index == 1 and "flatten" in str(err.value)
    model = Sequential.from_config([specs[0], {"type": "flatten"}, specs[1]], (5, 5, 1))
    assert [layer.type_name for layer in model.layers] == ["conv2d", "tanh", "flatten", "dense"]
    for spec, message in (({"type": "maxpool2d", "activation": "relu"}, "maxpool2d takes no activation"),
                          ({**specs[1], "activation": "softmax"}, "softmax is applied by the loss")):
        with pytest.raises(LayerConfigError) as err:
            Sequential.from_config([specs[0], spec], (5, 5, 1))
        assert err.value.index == 1 and err.value.key == "activation" and message in str(err.value)


def test_batchnorm_running_statistics_follow_their_formula_batch_after_batch():
    """running = momentum * running + (1 - momentum) * batch's, the variance unbiased (n - 1),
    from mean 0 and variance 1; over every axis but the channels."""
    layer = layer_from_config({"type": "batchnorm", "momentum": 0.8})
    layer.build((2, 3, 2), dtype=np.float64)
    rng = np.random.default_rng(0)
    mean, var = np.zeros(2), np.ones(2)
    for loc in (1.0, -2.0, 0.5):
        x = rng.normal(loc, 1.5, size=(4, 2, 3, 2))
        layer.forward(x, training=True)
        values = x.reshape(-1, 2)
        mean = 0.8 * mean + 0.2 * values.mean(axis=0)
        var = 0.8 * var + 0.2 * values.var(axis=0, ddof=1)
        np.testing.assert_allclose(layer.buffers["running_mean"], mean, rtol=1e-12)
        np.testing.assert_allclose(layer.buffers["running_var"], var, rtol=1e-12)
    layer.forward(x, training=False)  # evaluation leaves them alone
    np.testing.assert_allclose(layer.buffers["running_mean"], mean, rtol=1e-12)


# conv2d's options: (arguments, input shape, the notebook's pad they stand for, output rows and columns)
CONV_OPTIONS = {
    "padding same, 3x3: the input's size": ({"kernel": 3, "padding": "same"}, (5, 6, 2), 1, (5, 6)),
    "padding same, 5x5, stride 2: half the input's size, rounded up": (
        {"kernel": 5, "stride": 2, "padding": "same"}, (7, 8, 1), 2, (4, 4)),
    "padding valid, 3x3: no padding": ({"kernel": 3, "padding": "valid"}, (5, 6, 2), 0, (3, 4)),
    "padding valid, 2x2, stride 2, no bias": ({"kernel": 2, "stride": 2, "padding": "valid", "bias": False},
                                              (5, 6, 2), 0, (2, 3)),
    "padding 2, 4x4, stride 3: an even kernel with a number": ({"kernel": 4, "stride": 3, "padding": 2},
                                                               (6, 7, 2), 2, (3, 3)),
    "1x1 kernel": ({"kernel": 1}, (3, 4, 3), 0, (3, 4)),
}


@pytest.mark.parametrize("arguments,shape,pad,out_hw", CONV_OPTIONS.values(), ids=CONV_OPTIONS.keys())
def test_conv2d_options_match_the_loop_reference_and_finite_differences(arguments, shape, pad, out_hw,
                                                                        numerical_gradient, relative_error):
    """The layer's padding ("same", "valid", a number), stride and kernel give the notebook's
    ``pad`` and output size; forward and backward equal the loops to 1e-10 (float64), and the
    gradients centred differences to a relative 1e-6."""
    rng = np.random.default_rng(1)
    layer = layer_from_config({"type": "conv2d", "filters": 3, **arguments})
    assert layer.build(shape, rng, dtype=np.float64) == out_hw + (3,)
    layer.needs_input_grad = True
    x = rng.normal(size=(2,) + shape)
    if "b" in layer.params:
        layer.params["b"] = rng.normal(size=layer.params["b"].shape)  # not the zeros it starts from
    W, b = layer.params["W"], layer.params.get("b", np.zeros((1, 1, 1, 3)))
    hparameters = {"stride": arguments.get("stride", 1), "pad": pad}
    out = layer.forward(x, training=True)
    assert np.max(np.abs(out - conv_forward_loop(x, W, b, hparameters))) < 1e-10
    dout = rng.normal(size=out.shape)
    dx = layer.backward(dout)
    loop_dx, loop_dW, loop_db = conv_backward_loop(dout, x, W, hparameters)
    assert np.max(np.abs(dx - loop_dx)) < 1e-10 and np.max(np.abs(layer.grads["W"] - loop_dW)) < 1e-10
    assert ("b" in layer.grads) == layer.bias
    if layer.bias:
        assert np.max(np.abs(layer.grads["b"] - loop_db)) < 1e-10

    def loss():
        return float(np.sum(layer.forward_pass(x)[0] * dout))

    assert relative_error(dx, numerical_gradient(loss, x)) < 1e-6
    for key, p in layer.params.items():
        assert relative_error(layer.grads[key], numerical_gradient(loss, p)) < 1e-6, key


# pool layers: (type, arguments, input shape)
POOL_OPTIONS = {
    "2x2, stride by default 2": ({"size": 2}, (6, 7, 2)),
    "3x3, stride by default 3, the last row and column left out": ({"size": 3}, (7, 8, 1)),
    "3x3, stride 2: overlapping, the seed notebook's": ({"size": 3, "stride": 2}, (7, 7, 2)),
    "2x2, stride 3: gaps": ({"size": 2, "stride": 3}, (8, 7, 1)),
}


@pytest.mark.parametrize("kind", ["maxpool2d", "avgpool2d"])
@pytest.mark.parametrize("arguments,shape", POOL_OPTIONS.values(), ids=POOL_OPTIONS.keys())
def test_pool_layers_match_the_loop_reference_and_finite_differences(kind, arguments, shape, numerical_gradient,
                                                                     relative_error):
    """maxpool2d and avgpool2d, their stride given or by default their size: forward and backward
    equal the loops to 1e-10, the input gradient centred differences to a relative 1e-6."""
    rng = np.random.default_rng(2)
    layer = layer_from_config({"type": kind, **arguments})
    layer.build(shape, rng, dtype=np.float64)
    x = rng.normal(size=(2,) + shape)  # distinct values: each window's maximum is its only one
    hparameters = {"f": arguments["size"], "stride": arguments.get("stride", arguments["size"])}
    mode = "max" if kind == "maxpool2d" else "average"
    out = layer.forward(x, training=True)
    assert out.shape[1:] == layer.output_shape
    assert np.max(np.abs(out - pool_forward_loop(x, hparameters, mode))) < 1e-10
    dout = rng.normal(size=out.shape)
    dx = layer.backward(dout)
    assert np.max(np.abs(dx - pool_backward_loop(dout, x, hparameters, mode))) < 1e-10
    assert relative_error(dx, numerical_gradient(lambda: float(np.sum(layer.forward_pass(x)[0] * dout)), x)) < 1e-6


@pytest.mark.parametrize("config,shape", CASES, ids=[c["type"] + str(i) for i, (c, _) in enumerate(CASES)])
def test_layer_gradients_in_evaluation_match_finite_differences(config, shape, numerical_gradient, relative_error):
    """The backward of the evaluation forward (dropout off, batchnorm on its running statistics),
    as saliency maps use it; float64, relative error below 1e-6."""
    rng = np.random.default_rng(3)
    layer = layer_from_config(config)
    layer.build(shape, rng, dtype=np.float64)
    if config["type"] == "batchnorm":  # statistics and parameters other than the 0s and 1s they start from
        layer.buffers = {"running_mean": rng.normal(size=shape[-1]), "running_var": rng.uniform(0.5, 2, shape[-1])}
        layer.params = {"gamma": rng.normal(size=shape[-1]), "beta": rng.normal(size=shape[-1])}
    layer.needs_input_grad = True
    x = _input(shape, rng)
    if config["type"] == "maxpool2d":
        x = x + np.linspace(0, 1e-3, x.size).reshape(x.shape)
    out, cache = layer.forward_pass(x, training=False)
    dout = rng.normal(size=out.shape)
    dx, grads = layer.backward_pass(dout, cache)

    def loss():
        return float(np.sum(layer.forward_pass(x, training=False)[0] * dout))

    assert relative_error(dx, numerical_gradient(loss, x)) < 1e-6
    assert set(grads) == set(layer.params)
    for key, p in layer.params.items():
        assert relative_error(grads[key], numerical_gradient(loss, p)) < 1e-6, key


def test_load_state_dict_copies_into_the_arrays_params_hands_out():
    layers = [{"type": "conv2d", "filters": 3, "kernel": 3}, {"type": "batchnorm"}, {"type": "flatten"},
              {"type": "dense", "units": 4}]
    model, other = (Sequential.from_config(layers, (6, 6, 1), rng=np.random.default_rng(seed)) for seed in (0, 1))
    other.layers[1].buffers["running_mean"] += 1.0
    params, buffers, state = model.params(), model.buffers(), other.state_dict()
    model.load_state_dict(state)
    for prefix, arrays in (("param", params), ("buffer", buffers)):
        for key, array in arrays.items():
            np.testing.assert_array_equal(array, state[f"{prefix}.{key}"], err_msg=f"{prefix}.{key}")


@pytest.mark.parametrize("dtype", [np.uint8, np.int16])
@pytest.mark.parametrize("config,shape", CASES, ids=[c["type"] + str(i) for i, (c, _) in enumerate(CASES)])
def test_integer_images_compute_as_their_values_as_floats(config, shape, dtype, float32_close):
    """The seed notebook's images are uint8 (0 or 255): every layer computes in a float type on
    integers, as the conv and pool kernels do, rather than wrapping or truncating in the integer type."""
    rng = np.random.default_rng(0)
    layer = layer_from_config(config)
    layer.build(shape, rng)
    layer.needs_input_grad = True
    low = 0 if dtype == np.uint8 else -255
    integers = rng.integers(low, 256, size=(3,) + shape).astype(dtype)
    for training in (True, False):
        out, cache = layer.forward_pass(integers, training, np.random.default_rng(7))
        expected, expected_cache = layer.forward_pass(integers.astype(np.float64), training, np.random.default_rng(7))
        float32_close(out, expected, what=f"forward, training={training}")
        dout = rng.normal(size=out.shape)
        float32_close(layer.backward_pass(dout, cache)[0], layer.backward_pass(dout, expected_cache)[0],
                      what=f"backward, training={training}")
