"""The fused first conv + 2x2 max pool against the loop oracle, finite differences, the separate
kernels, and inside a model."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mnistcnn import convpool
from mnistcnn import functional as F
from mnistcnn.layers import MaxPool2D
from mnistcnn.model import Sequential
from gradcheck import numerical_gradient, relative_error
from reference import conv_backward_loop, conv_forward_loop, pool_backward_loop, pool_forward_loop

POOL = {"f": 2, "stride": 2}


@st.composite
def cases(draw):
    f = draw(st.integers(1, 5))
    stride = draw(st.integers(1, 2))
    pad = draw(st.integers(0, 2))
    # a conv output of at least 2x2, odd sizes included (the pool drops the last row/column)
    h = draw(st.integers(max(1, f - 2 * pad + stride), 11))
    w = draw(st.integers(max(1, f - 2 * pad + stride), 11))
    return dict(m=draw(st.integers(1, 3)), h=h, w=w, c=draw(st.integers(1, 4)), f=f, stride=stride, pad=pad,
                binary=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


@settings(max_examples=60, deadline=None)
@given(cases())
def test_matches_loop_reference(case):
    rng = np.random.default_rng(case["seed"])
    shape = (case["m"], case["h"], case["w"], 1)
    # binary images give many exactly tied windows (a blank patch): the first maximum must win
    A = (rng.random(shape) > 0.5).astype(np.float64) if case["binary"] else rng.normal(size=shape)
    W = rng.normal(size=(case["f"], case["f"], 1, case["c"]))
    b = rng.normal(size=(1, 1, 1, case["c"]))
    hp = {"stride": case["stride"], "pad": case["pad"]}
    out, cache = convpool.conv_pool_forward(A, W, b, hp)
    Z = conv_forward_loop(A, W, b, hp)
    assert np.max(np.abs(out - pool_forward_loop(Z, POOL))) < 1e-10
    d_out = rng.normal(size=out.shape)
    dW, db = convpool.conv_pool_backward(d_out, cache)
    # the oracle routes through the biased conv output; ties there are the same ties
    _, dW_want, db_want = conv_backward_loop(pool_backward_loop(d_out, Z, POOL), A, W, hp)
    assert np.max(np.abs(dW - dW_want)) < 1e-10
    assert np.max(np.abs(db - db_want)) < 1e-10


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(2, 7, 6, 1))
    W = rng.normal(size=(3, 3, 1, 4))
    b = rng.normal(size=(1, 1, 1, 4))
    hp = {"stride": 1, "pad": 1}
    out, cache = convpool.conv_pool_forward(A, W, b, hp)
    probe = rng.normal(size=out.shape)

    def loss():
        return float(np.sum(convpool.conv_pool_forward(A, W, b, hp)[0] * probe))

    dW, db = convpool.conv_pool_backward(probe, cache)
    assert relative_error(dW, numerical_gradient(loss, W)) < 1e-6
    assert relative_error(db, numerical_gradient(loss, b)) < 1e-6


def test_float32_forward_is_exactly_the_separate_kernels():
    """Same dot products, and the bias after the max: not one bit differs."""
    rng = np.random.default_rng(4)
    A = (rng.random((16, 28, 28, 1)) > 0.6).astype(np.float32)
    W = rng.normal(size=(5, 5, 1, 32)).astype(np.float32)
    b = rng.normal(size=(1, 1, 1, 32)).astype(np.float32)
    hp = {"stride": 1, "pad": 2}
    out, cache = convpool.conv_pool_forward(A, W, b, hp)
    Z, conv_cache = F.conv_forward(A, W, b, hp)
    pooled, pool_cache = F.pool_forward(Z, POOL)
    assert out.dtype == np.float32 and np.array_equal(out, pooled)
    d_out = rng.normal(size=out.shape).astype(np.float32)
    dW, db = convpool.conv_pool_backward(d_out, cache)
    _, dW_want, db_want = F.conv_backward(F.pool_backward(d_out, pool_cache), conv_cache, compute_dA=False)
    assert dW.dtype == np.float32
    assert relative_error(dW, dW_want) < 1e-5 and relative_error(db, db_want) < 1e-5


def test_refuses_what_it_cannot_do():
    W = np.ones((3, 3, 2, 4))
    with pytest.raises(ValueError, match="one-channel"):
        convpool.conv_pool_forward(np.ones((1, 6, 6, 2)), W, None, {"stride": 1, "pad": 1})
    with pytest.raises(ValueError, match="2x2 pool"):
        convpool.conv_pool_forward(np.ones((1, 3, 3, 1)), np.ones((3, 3, 1, 4)), None, {"stride": 1, "pad": 0})
    assert not convpool.supported((28, 28, 1), 5, 1, 2, 3, 2)


LENET = [
    {"type": "conv2d", "filters": 8, "kernel": 5, "padding": 2},
    {"type": "relu"},
    {"type": "maxpool2d", "size": 2},
    {"type": "conv2d", "filters": 8, "kernel": 3, "padding": 1},
    {"type": "relu"},
    {"type": "maxpool2d", "size": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 10},
]


def test_model_fuses_only_a_first_one_channel_conv_and_keeps_its_numbers():
    model = Sequential.from_config(LENET, (12, 12, 1), np.random.default_rng(0))
    for layer in model.layers:
        if "b" in layer.params:  # non-zero biases, so that adding them after the pool is tested
            layer.params["b"][...] = np.random.default_rng(1).normal(size=layer.params["b"].shape)
    x = (np.random.default_rng(2).random((6, 12, 12, 1)) > 0.5).astype(np.float32)
    assert model._pooled_convs(model._order(True)) == {0: 2}  # not the second conv: it needs dA
    plain, plain_caches = model.forward(x, training=True)
    fused, caches = model.forward(x, training=True, fast=True)
    assert isinstance(caches[0], convpool.Cache) and caches[2] is convpool.POOLED_BY_CONV
    assert np.array_equal(plain, fused)
    assert np.array_equal(model.forward(x)[0], model.forward(x, fast=True)[0])
    dout = np.random.default_rng(3).normal(size=plain.shape).astype(np.float32)
    want, _ = model.backward(dout, plain_caches)
    got, _ = model.backward(dout, caches, fast=True)
    assert set(got) == set(want)
    for key in want:
        assert relative_error(got[key], want[key]) < 1e-5, key
    # a pool that the conv did not do still gets its own cache
    assert not isinstance(caches[5], str) and type(model.layers[5]) is MaxPool2D
