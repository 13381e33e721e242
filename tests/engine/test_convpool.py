"""The fused first conv + 2x2 max pool against the loop oracle, finite differences, the separate
kernels, and inside a model."""
import contextlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mnistcnn.engine.fast import convpool, fftconv
from mnistcnn.engine.fast.plan import Plan
from mnistcnn.engine import functional as F
from mnistcnn.engine.model import Sequential
from mnistcnn.engine.reference import conv_backward_loop, conv_forward_loop, pool_backward_loop, pool_forward_loop

POOL = {"f": 2, "stride": 2}


@st.composite
def cases(draw):
    algorithm = draw(st.sampled_from(["im2col", "fft-gemm"]))
    f = draw(st.integers(1, 5))
    # fft-gemm: stride 1, pad < f, any channels; im2col: one channel, any stride and pad
    stride = 1 if algorithm == "fft-gemm" else draw(st.integers(1, 2))
    pad = draw(st.integers(0, f - 1 if algorithm == "fft-gemm" else 2))
    # a conv output of at least 2x2, odd sizes included (the pool drops the last row/column)
    h = draw(st.integers(max(1, f - 2 * pad + stride), 11))
    w = draw(st.integers(max(1, f - 2 * pad + stride), 11))
    c_prev = draw(st.integers(1, 3)) if algorithm == "fft-gemm" else 1
    return dict(algorithm=algorithm, m=draw(st.integers(1, 3)), h=h, w=w, c_prev=c_prev, c=draw(st.integers(1, 4)),
                f=f, stride=stride, pad=pad, binary=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def fused_forward(algorithm, A, W, b, hp):
    if algorithm == "fft-gemm":
        return convpool.fft_conv_pool_forward(A, W, b, hp)
    return convpool.conv_pool_forward(A, W, b, hp)


@contextlib.contextmanager
def eval_slices(images):
    saved, convpool.EVAL_SLICE_IMAGES = convpool.EVAL_SLICE_IMAGES, images
    try:
        yield
    finally:
        convpool.EVAL_SLICE_IMAGES = saved


def conv_values_in_image_order(cache):
    """The fused kernel's conv output (no bias) as (m, 2h, 2w, C) in image order."""
    f, m, h, w, c = cache.shape
    if isinstance(cache.conv, np.ndarray):  # im2col: (window row, window column, m, h, w)
        Z = cache.Z.reshape(2, 2, m, h, w, c).transpose(2, 3, 0, 4, 1, 5)
    else:  # fft: rows (window row, h), columns (window column, w)
        Z = cache.Z.reshape(m, 2, h, 2, w, c).transpose(0, 2, 1, 4, 3, 5)
    return Z.reshape(m, 2 * h, 2 * w, c)


@settings(max_examples=80, deadline=None)
@given(cases())
def test_matches_loop_reference(images, case):
    rng = np.random.default_rng(case["seed"])
    A = images(rng, (case["m"], case["h"], case["w"], case["c_prev"]), case["binary"])
    W = rng.normal(size=(case["f"], case["f"], case["c_prev"], case["c"]))
    b = rng.normal(size=(1, 1, 1, case["c"]))
    hp = {"stride": case["stride"], "pad": case["pad"]}
    out, cache = fused_forward(case["algorithm"], A, W, b, hp)
    Z = conv_forward_loop(A, W, b, hp)
    assert np.max(np.abs(out - pool_forward_loop(Z, POOL))) < 1e-10
    if case["algorithm"] == "im2col":  # evaluation's way, from the shifted blocks: the same sums
        # in one slice of images and in slices of two (the last one short when m is odd)
        for per_slice in (convpool.EVAL_SLICE_IMAGES, 2):
            with eval_slices(per_slice):
                evaluated = convpool.conv_pool_forward(A, W, b, hp, training=False)[0]
                with_relu = convpool.conv_pool_forward(A, W, b, hp, training=False, relu=True)[0]
            np.testing.assert_allclose(evaluated, out, rtol=1e-13, atol=1e-13)
            assert np.array_equal(with_relu, np.maximum(evaluated, 0))
    else:
        assert np.array_equal(convpool.fft_conv_pool_forward(A, W, b, hp, relu=True)[0], np.maximum(out, 0))
    d_out = rng.normal(size=out.shape)
    fft = case["algorithm"] == "fft-gemm"
    dA, dW, db = convpool.conv_pool_backward(d_out, cache, compute_dA=fft)
    # the pool's oracle routes by the kernel's own conv values (exact ties there, while an fft's
    # differ from the loop's, and from another fft plan's, in the last bits), then the conv's
    # oracle takes over
    dZ = np.zeros(Z.shape)
    f, m, h, w, c = cache.shape
    dZ[:, :2 * h, :2 * w] = pool_backward_loop(d_out, conv_values_in_image_order(cache), POOL)
    dA_want, dW_want, db_want = conv_backward_loop(dZ, A, W, hp)
    assert np.max(np.abs(dW - dW_want)) < 1e-10
    assert np.max(np.abs(db - db_want)) < 1e-10
    if fft:
        assert np.max(np.abs(dA - dA_want)) < 1e-10
    else:
        assert dA is None  # a first layer's: nobody needs it


@pytest.mark.parametrize("algorithm,c_prev", [("im2col", 1), ("fft-gemm", 2)])
def test_gradients_match_finite_differences(algorithm, c_prev, numerical_gradient, relative_error, conv_arrays):
    rng = np.random.default_rng(3)
    A, W, b = conv_arrays(rng, (2, 7, 6, c_prev), 3, 4)
    hp = {"stride": 1, "pad": 1}
    out, cache = fused_forward(algorithm, A, W, b, hp)
    probe = rng.normal(size=out.shape)

    def loss():
        return float(np.sum(fused_forward(algorithm, A, W, b, hp)[0] * probe))

    dA, dW, db = convpool.conv_pool_backward(probe, cache, compute_dA=True)
    assert relative_error(dW, numerical_gradient(loss, W)) < 1e-6
    assert relative_error(db, numerical_gradient(loss, b)) < 1e-6
    if algorithm == "fft-gemm":
        assert relative_error(dA, numerical_gradient(loss, A)) < 1e-6


@pytest.mark.parametrize("algorithm", ["im2col", "fft-gemm"])
def test_float32_forward_is_the_separate_kernels(algorithm, float32_close, relative_error):
    """Same dot products, and the bias after the max: equal within float32 rounding (LeNet's shapes)."""
    rng = np.random.default_rng(4)
    c_prev, c, side = (1, 32, 28) if algorithm == "im2col" else (32, 64, 14)
    A = rng.random((16, side, side, c_prev)).astype(np.float32)
    A[:, :4] = 0  # blank rows: tied windows
    W = rng.normal(size=(5, 5, c_prev, c)).astype(np.float32)
    b = rng.normal(size=(1, 1, 1, c)).astype(np.float32)
    hp = {"stride": 1, "pad": 2}
    out, cache = fused_forward(algorithm, A, W, b, hp)
    kernels = fftconv if algorithm == "fft-gemm" else F
    assert out.dtype == np.float32
    float32_close(out, F.pool_forward(kernels.conv_forward(A, W, b, hp)[0], POOL)[0])
    if algorithm == "im2col":  # evaluation's way: one window position at a time, no cache,
        # in slices of images (here 5, 5, 5 and 1), the relu done while a slice is in cache
        with eval_slices(5):
            evaluated, nothing = convpool.conv_pool_forward(A, W, b, hp, training=False)
            with_relu = convpool.conv_pool_forward(A, W, b, hp, training=False, relu=True)[0]
        assert nothing is None
        float32_close(evaluated, out)
        assert np.array_equal(with_relu, np.maximum(evaluated, 0))  # the same products: exactly
        with eval_slices(5):  # a conv without bias: the relu alone
            unbiased = convpool.conv_pool_forward(A, W, None, hp, training=False, relu=True)[0]
        separate = F.pool_forward(F.conv_forward(A, W, np.zeros_like(b), hp)[0], POOL)[0]
        float32_close(unbiased, np.maximum(separate, 0))
        with pytest.raises(ValueError, match="relu"):
            convpool.conv_pool_forward(A, W, b, hp, relu=True)
    # the gradient is routed by the fused kernel's own conv values (before the bias): over blank
    # rows the fft's outputs are near-ties whose order another GEMM shape or BLAS kernel can flip
    _, conv_cache = kernels.conv_forward(A, W, None, hp)
    _, pool_cache = F.pool_forward(conv_values_in_image_order(cache), POOL)
    d_out = rng.normal(size=out.shape).astype(np.float32)
    dA, dW, db = convpool.conv_pool_backward(d_out, cache, compute_dA=algorithm == "fft-gemm")
    want = kernels.conv_backward(F.pool_backward(d_out, pool_cache), conv_cache, compute_dA=algorithm == "fft-gemm")
    assert dW.dtype == np.float32
    for got, expected in zip((dA, dW, db), want):
        assert (got is None) == (expected is None)
        if got is not None:
            assert relative_error(got, expected) < 1e-5


def test_refuses_what_it_cannot_do():
    W = np.ones((3, 3, 2, 4))
    with pytest.raises(ValueError, match="one-channel"):
        convpool.conv_pool_forward(np.ones((1, 6, 6, 2)), W, None, {"stride": 1, "pad": 1})
    with pytest.raises(ValueError, match="2x2 pool"):
        convpool.conv_pool_forward(np.ones((1, 3, 3, 1)), np.ones((3, 3, 1, 4)), None, {"stride": 1, "pad": 0})
    with pytest.raises(ValueError, match="stride 1"):
        convpool.fft_conv_pool_forward(np.ones((1, 8, 8, 2)), W, None, {"stride": 2, "pad": 1})
    assert not convpool.supported((28, 28, 1), 5, 1, 2, 3, 2)
    assert convpool.supported((14, 14, 32), 5, 1, 2, 2, 2, "fft-gemm")


RELU, POOL_LAYER = {"type": "relu"}, {"type": "maxpool2d", "size": 2}
LENET = [{"type": "conv2d", "filters": 8, "kernel": 5, "padding": 2}, RELU, POOL_LAYER,
         {"type": "conv2d", "filters": 8, "kernel": 3, "padding": 1}, RELU, POOL_LAYER,
         {"type": "flatten"}, {"type": "dense", "units": 10}]


def test_plan_fuses_a_first_one_channel_conv_and_keeps_its_numbers(float32_close, relative_error):
    model = Sequential.from_config(LENET, (12, 12, 1), np.random.default_rng(0))
    for layer in model.layers:
        if "b" in layer.params:  # non-zero biases, so that adding them after the pool is tested
            layer.params["b"][...] = np.random.default_rng(1).normal(size=layer.params["b"].shape)
    x = (np.random.default_rng(2).random((6, 12, 12, 1)) > 0.5).astype(np.float32)
    plan = Plan(model)
    # the second conv (3x3 on 6x6x8: im2col) needs its input gradient, so it pools apart
    assert [type(step).__name__ for step in plan.training_steps][:4] == ["ConvPoolStep", "LayerStep", "ConvStep",
                                                                          "LayerStep"]
    float32_close(plan.forward(x)[0], model.forward(x))
    plain = model.forward(x, training=True)
    fused, caches = plan.forward(x, training=True)
    assert isinstance(caches[0], convpool.Cache)
    float32_close(fused, plain)
    dout = np.random.default_rng(3).normal(size=plain.shape).astype(np.float32)
    model.backward(dout)
    want = model.gradients()
    got = {}
    for work in plan.backward(dout, caches):
        got.update(work())
    assert set(got) == set(want)
    for key in want:
        assert relative_error(got[key], want[key]) < 1e-5, key
