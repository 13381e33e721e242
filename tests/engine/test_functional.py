"""The vectorised kernels against the loop oracle and finite differences."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mnistcnn.engine.notebook import create_mask_from_window, distribute_value
from mnistcnn.engine.functional import (conv_backward, conv_forward, conv_input_gradient, conv_weight_gradients,
                                        pool_backward, pool_forward, zero_pad)
from mnistcnn.engine.reference import conv_backward_loop, conv_forward_loop, pool_backward_loop, pool_forward_loop


@st.composite
def conv_cases(draw):
    f = draw(st.integers(1, 4))
    stride = draw(st.integers(1, 3))
    pad = draw(st.integers(0, 2))
    h = draw(st.integers(max(1, f - 2 * pad), 9))
    w = draw(st.integers(max(1, f - 2 * pad), 9))
    return dict(m=draw(st.integers(1, 3)), h=h, w=w, c_prev=draw(st.integers(1, 3)), c=draw(st.integers(1, 4)),
                f=f, stride=stride, pad=pad, seed=draw(st.integers(0, 2**16)))


@settings(max_examples=60, deadline=None)
@given(conv_cases())
def test_conv_matches_loop_reference(conv_arrays, case):
    rng = np.random.default_rng(case["seed"])
    A, W, b = conv_arrays(rng, (case["m"], case["h"], case["w"], case["c_prev"]), case["f"], case["c"])
    hp = {"stride": case["stride"], "pad": case["pad"]}
    Z, cache = conv_forward(A, W, b, hp)
    assert np.max(np.abs(Z - conv_forward_loop(A, W, b, hp))) < 1e-10
    dZ = rng.normal(size=Z.shape)
    dA, dW, db = conv_backward(dZ, cache)
    rA, rW, rb = conv_backward_loop(dZ, A, W, hp)
    for got, want in ((dA, rA), (dW, rW), (db, rb)):
        assert got.shape == want.shape
        assert np.max(np.abs(got - want)) < 1e-10


@st.composite
def pool_cases(draw):
    f = draw(st.integers(1, 4))
    stride = draw(st.integers(1, 3))
    binary = draw(st.booleans())
    return dict(m=draw(st.integers(1, 3)), h=draw(st.integers(f, 10)), w=draw(st.integers(f, 10)),
                c=draw(st.integers(1, 3)), f=f, stride=stride, binary=binary, seed=draw(st.integers(0, 2**16)),
                mode=draw(st.sampled_from(["max", "average"])))


@settings(max_examples=80, deadline=None)
@given(pool_cases())
def test_pool_matches_loop_reference(images, case):
    rng = np.random.default_rng(case["seed"])
    A = images(rng, (case["m"], case["h"], case["w"], case["c"]), case["binary"])
    hp = {"f": case["f"], "stride": case["stride"]}
    out, cache = pool_forward(A, hp, mode=case["mode"])
    assert np.max(np.abs(out - pool_forward_loop(A, hp, case["mode"]))) < 1e-10
    dA = rng.normal(size=out.shape)
    got = pool_backward(dA, cache, mode=case["mode"])
    assert np.max(np.abs(got - pool_backward_loop(dA, A, hp, case["mode"]))) < 1e-10
    # each window hands on exactly what it received
    assert abs(got.sum() - dA.sum()) < 1e-9


@pytest.mark.parametrize("f,stride", [(2, 2), (3, 2), (3, 1), (2, 3)])
def test_max_pool_ties_send_gradient_to_first_maximum(f, stride):
    A = np.ones((1, 7, 7, 1))  # every window is one big tie
    out, cache = pool_forward(A, {"f": f, "stride": stride})
    dA = np.arange(1, out.size + 1, dtype=np.float64).reshape(out.shape)
    dA_prev = pool_backward(dA, cache)
    n_h, n_w = out.shape[1:3]
    expected = np.zeros_like(A)
    for h in range(n_h):
        for w in range(n_w):
            expected[0, h * stride, w * stride, 0] += dA[0, h, w, 0]  # the window's top-left cell
    np.testing.assert_array_equal(dA_prev, expected)


def test_pad_zero_and_uneven_tiling(conv_arrays):
    rng = np.random.default_rng(1)
    A, W, b = conv_arrays(rng, (2, 7, 5, 2), 3, 4)
    hp = {"stride": 2, "pad": 0}
    Z, cache = conv_forward(A, W, b, hp)
    assert Z.shape == (2, 3, 2, 4)
    dA, _, _ = conv_backward(np.ones_like(Z), cache)
    assert dA.shape == A.shape
    assert np.allclose(dA, conv_backward_loop(np.ones_like(Z), A, W, hp)[0])
    # f=2 stride 2 on a 7x5 input leaves the last row uncovered: it gets no gradient
    out, pcache = pool_forward(A, {"f": 2, "stride": 2})
    assert out.shape == (2, 3, 2, 2)
    d = pool_backward(np.ones_like(out), pcache, mode="average")
    assert np.all(d[:, 6, :, :] == 0) and np.all(d[:, :, 4, :] == 0)


def _tie_breaking_offsets(shape, step=1e-4):
    """A tiny decrease along the row-major pixel order: makes each window's first maximum its
    unique maximum, which is what the tie rule says the gradient should see."""
    m, h, w, c = shape
    raster = np.arange(h * w, dtype=np.float64).reshape(1, h, w, 1)
    return -step * np.broadcast_to(raster, shape)


@pytest.mark.parametrize("mode", ["max", "average"])
@pytest.mark.parametrize("f,stride", [(2, 2), (3, 2), (2, 1)])
def test_pool_gradient_by_finite_differences_with_ties(mode, f, stride, numerical_gradient, relative_error):
    rng = np.random.default_rng(3)
    A = (rng.random((2, 6, 6, 2)) > 0.5).astype(np.float64)
    hp = {"f": f, "stride": stride}
    out, cache = pool_forward(A, hp, mode=mode)
    dA = rng.normal(size=out.shape)
    analytic = pool_backward(dA, cache, mode=mode)
    # finite differences where the tie is broken in favour of the first maximum
    X = A + _tie_breaking_offsets(A.shape) if mode == "max" else A.copy()
    numeric = numerical_gradient(lambda: float(np.sum(pool_forward(X, hp, mode=mode)[0] * dA)), X, eps=1e-7)
    assert relative_error(analytic, numeric) < 1e-6


def test_conv_gradient_by_finite_differences(numerical_gradient, relative_error, conv_arrays):
    rng = np.random.default_rng(4)
    A, W, b = conv_arrays(rng, (2, 5, 6, 3), 3, 2)
    hp = {"stride": 2, "pad": 1}
    Z, cache = conv_forward(A, W, b, hp)
    dZ = rng.normal(size=Z.shape)
    dA, dW, db = conv_backward(dZ, cache)
    loss = lambda: float(np.sum(conv_forward(A, W, b, hp)[0] * dZ))  # noqa: E731
    for analytic, x in ((dA, A), (dW, W), (db, b)):
        assert relative_error(analytic, numerical_gradient(loss, x)) < 1e-6


def test_dtype_follows_input():
    rng = np.random.default_rng(5)
    A = rng.normal(size=(2, 6, 6, 1)).astype(np.float32)
    W = rng.normal(size=(3, 3, 1, 2)).astype(np.float32)
    b = np.zeros((1, 1, 1, 2), np.float32)
    Z, cache = conv_forward(A, W, b, {"stride": 1, "pad": 1})
    assert Z.dtype == np.float32
    assert all(g.dtype == np.float32 for g in conv_backward(Z, cache))
    P, pcache = pool_forward(Z, {"f": 2, "stride": 2})
    assert P.dtype == np.float32 and pool_backward(P, pcache).dtype == np.float32


def test_the_notebook_helpers_work_and_bad_shapes_or_settings_raise():
    assert zero_pad(np.ones((1, 2, 2, 1)), 1).shape == (1, 4, 4, 1)
    assert create_mask_from_window(np.array([[1.0, 3.0], [3.0, 0.0]])).sum() == 1
    assert np.allclose(distribute_value(2, (2, 2)), 0.5)
    with pytest.raises(ValueError, match="does not fit"):
        conv_forward(np.ones((1, 3, 3, 1)), np.ones((5, 5, 1, 1)), np.zeros((1, 1, 1, 1)), {"stride": 1, "pad": 0})
    with pytest.raises(ValueError, match="input channels"):
        conv_forward(np.ones((1, 5, 5, 2)), np.ones((3, 3, 1, 1)), np.zeros((1, 1, 1, 1)), {"stride": 1, "pad": 0})
    with pytest.raises(ValueError, match="mode"):
        pool_forward(np.ones((1, 4, 4, 1)), {"f": 2, "stride": 2}, mode="min")
    with pytest.raises(ValueError, match="stride"):
        conv_forward(np.ones((1, 5, 5, 1)), np.ones((3, 3, 1, 1)), np.zeros((1, 1, 1, 1)), {"stride": 0, "pad": 0})


@pytest.mark.parametrize("dZ_shape", [(2, 3, 3, 2), (18, 2), (2, 3, 3)])
@pytest.mark.parametrize("gradient", [conv_backward, conv_weight_gradients, conv_input_gradient])
def test_each_conv_gradient_names_a_dZ_of_the_wrong_shape(gradient, dZ_shape):
    """The README names both halves of the backward pass: each, called alone, says what dZ must be."""
    hparameters = {"stride": 1, "pad": 1}
    _, cache = conv_forward(np.ones((2, 4, 4, 1)), np.ones((3, 3, 1, 2)), np.zeros((1, 1, 1, 2)), hparameters)
    with pytest.raises(ValueError, match=r"dZ must have the forward output's shape \(2, 4, 4, 2\)"):
        gradient(np.ones(dZ_shape), cache)


# (m, h, w, c_prev, c, f, stride, pad): the corners a drawn case may miss, each checked against
# the loop oracle and by finite differences
CONV_EDGES = {
    "batch of 1, one channel, pad 0": (1, 5, 5, 1, 2, 3, 1, 0),
    "1x1 kernel on a non-square input": (2, 4, 7, 3, 2, 1, 1, 0),
    "stride 2 that leaves the last row and column out": (2, 7, 6, 2, 3, 3, 2, 0),
    "stride larger than the kernel: gaps": (1, 6, 9, 1, 2, 2, 3, 1),
    "pad at least f: windows wholly in the padding": (2, 3, 4, 2, 2, 3, 1, 3),
    "kernel the size of the input: one output": (2, 4, 4, 2, 3, 4, 1, 0),
    "5x5 kernel, pad 2: every shipped config's": (2, 6, 7, 1, 3, 5, 1, 2),
    "5x5 kernel, stride 2, pad 2: the seed notebook's": (2, 7, 8, 2, 2, 5, 2, 2),
}


@pytest.mark.parametrize("m,h,w,c_prev,c,f,stride,pad", CONV_EDGES.values(), ids=CONV_EDGES.keys())
def test_conv_edge_cases_match_the_loop_and_finite_differences(m, h, w, c_prev, c, f, stride, pad, conv_arrays,
                                                               numerical_gradient, relative_error):
    rng = np.random.default_rng(6)
    A, W, b = conv_arrays(rng, (m, h, w, c_prev), f, c)
    hp = {"stride": stride, "pad": pad}
    Z, cache = conv_forward(A, W, b, hp)
    assert np.max(np.abs(Z - conv_forward_loop(A, W, b, hp))) < 1e-10
    dZ = rng.normal(size=Z.shape)
    loss = lambda: float(np.sum(conv_forward(A, W, b, hp)[0] * dZ))  # noqa: E731
    for analytic, loop, x in zip(conv_backward(dZ, cache), conv_backward_loop(dZ, A, W, hp), (A, W, b)):
        assert analytic.shape == x.shape
        assert np.max(np.abs(analytic - loop)) < 1e-10
        assert relative_error(analytic, numerical_gradient(loss, x)) < 1e-6


# (m, h, w, c, f, stride)
POOL_EDGES = {
    "1x1 window: the identity": (1, 4, 6, 1, 1, 1),
    "1x1 window, stride 2: every other pixel": (2, 5, 7, 2, 1, 2),
    "window the size of the input": (1, 4, 4, 3, 4, 1),
    "stride larger than the window: gaps": (2, 7, 9, 2, 2, 3),
    "overlapping windows, batch of 1, non-square": (1, 6, 5, 1, 3, 1),
}


@pytest.mark.parametrize("mode", ["max", "average"])
@pytest.mark.parametrize("m,h,w,c,f,stride", POOL_EDGES.values(), ids=POOL_EDGES.keys())
def test_pool_edge_cases_match_the_loop_and_finite_differences(m, h, w, c, f, stride, mode, numerical_gradient,
                                                               relative_error):
    rng = np.random.default_rng(7)
    A = rng.normal(size=(m, h, w, c))  # distinct values: each window's maximum is its only one
    hp = {"f": f, "stride": stride}
    out, cache = pool_forward(A, hp, mode=mode)
    assert np.max(np.abs(out - pool_forward_loop(A, hp, mode))) < 1e-10
    dA = rng.normal(size=out.shape)
    got = pool_backward(dA, cache, mode=mode)
    assert np.max(np.abs(got - pool_backward_loop(dA, A, hp, mode))) < 1e-10
    numeric = numerical_gradient(lambda: float(np.sum(pool_forward(A, hp, mode=mode)[0] * dA)), A)
    assert relative_error(got, numeric) < 1e-6
