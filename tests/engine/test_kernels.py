"""fast.kernels against the plain kernels and layers they stand in for: the same numbers within
float32 rounding (conftest's FLOAT32_RTOL; sums taken in another order), copies exactly."""

import numpy as np
import pytest

from mnistcnn.engine import functional as F
from mnistcnn.engine.fast import convpool, kernels
from mnistcnn.engine.layers import BatchNorm, ReLU


def test_column_sums_are_the_plain_row_sums(float32_close):
    rows = np.random.default_rng(0).normal(1.0, 1.0, size=(30000, 8)).astype(np.float32)
    float32_close(kernels.column_sums(rows), F.sum_rows(rows))


@pytest.mark.parametrize("pad", [0, 1, 3])
def test_zero_pad_copies_what_the_plain_pad_does(pad):
    X = np.random.default_rng(1).normal(size=(2, 5, 4, 3)).astype(np.float32)
    np.testing.assert_array_equal(kernels.zero_pad(X, pad), F.zero_pad(X, pad))


@pytest.mark.parametrize("c_prev, columns", [(3, F.im2col), (1, convpool.one_channel_columns)])
@pytest.mark.parametrize("stride, pad", [(1, 0), (1, 2), (2, 1)])
def test_conv_forward_and_weight_gradients_are_the_plain_ones(float32_close, c_prev, columns, stride, pad):
    rng = np.random.default_rng(2)
    A = rng.normal(size=(4, 11, 9, c_prev)).astype(np.float32)
    W = rng.normal(size=(3, 3, c_prev, 5)).astype(np.float32)
    b = rng.normal(size=(1, 1, 1, 5)).astype(np.float32)
    hparameters = {"stride": stride, "pad": pad}
    Z, cache = kernels.conv_forward(A, W, b, hparameters, columns)
    plain_Z, plain_cache = F.conv_forward(A, W, b, hparameters)
    float32_close(Z, plain_Z)
    dZ = rng.normal(size=Z.shape).astype(np.float32)
    for got, want in zip(kernels.conv_weight_gradients(dZ, cache), F.conv_weight_gradients(dZ, plain_cache)):
        float32_close(got, want)


@pytest.mark.parametrize("mode", ["max", "average"])
@pytest.mark.parametrize("size", [(8, 6), (9, 7)])  # windows that cover every cell, and windows that leave a gap
def test_tiled_pool_backward_is_the_plain_one(float32_close, images, mode, size):
    rng = np.random.default_rng(3)
    A_prev = images(rng, (3, *size, 4), binary=(mode == "max"))  # exact ties: the first maximum takes it
    hparameters = {"f": 2, "stride": 2}
    A, cache = F.pool_forward(A_prev, hparameters, mode)
    dA = rng.normal(size=A.shape).astype(np.float32)
    float32_close(kernels.tiled_pool_backward(dA, cache, mode), F.pool_backward(dA, cache, mode))


def test_batchnorm_training_passes_are_the_plain_layer_s(float32_close):
    rng = np.random.default_rng(4)
    layer = BatchNorm()
    layer.build((6, 6, 5))
    layer.params["gamma"][...] = rng.uniform(0.5, 1.5, 5)
    layer.params["beta"][...] = rng.normal(size=5)
    x = rng.normal(2.0, 3.0, size=(8, 6, 6, 5)).astype(np.float32)
    out, cache = kernels.batchnorm_forward(layer, x)
    plain_out, plain_cache = layer.forward_pass(x, training=True)
    float32_close(out, plain_out)
    for got, want in zip(cache, plain_cache):
        float32_close(got, want)
    dout = rng.normal(size=x.shape).astype(np.float32)
    dx, grads = kernels.batchnorm_backward(layer, dout, cache)
    plain_dx, plain_grads = layer.backward_pass(dout, plain_cache)
    float32_close(dx, plain_dx)
    for key in plain_grads:
        float32_close(grads[key], plain_grads[key], what=key)


def test_relu_passes_are_the_plain_layer_s():
    rng = np.random.default_rng(5)
    x, dout = rng.normal(size=(2, 3, 3, 4)).astype(np.float32), rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
    out, mask = kernels.relu_forward(x, training=True)
    plain_out, plain_cache = ReLU().forward_pass(x, training=True)
    np.testing.assert_array_equal(out, plain_out)
    np.testing.assert_array_equal(kernels.relu_backward(dout, mask), ReLU().backward_pass(dout, plain_cache)[0])
    assert kernels.relu_forward(x, training=False)[1] is None
