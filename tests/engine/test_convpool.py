"""The fused conv + stride-2 max pool (2x2; 3x3 after a one-channel conv) against the loop
oracle, finite differences, the separate kernels, and inside a model."""
import contextlib

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from mnistcnn.engine.fast import convpool, fftconv
from mnistcnn.engine.fast.plan import Plan
from mnistcnn.engine import functional as F
from mnistcnn.engine.model import Sequential
from mnistcnn.engine.reference import conv_backward_loop, conv_forward_loop, pool_backward_loop, pool_forward_loop

def conv_pool_backward(fft_conv_backward, dout, cache, compute_dA=False):
    """``(dA_prev, dW, db)`` from either fused forward's cache, as the plan's step computes them
    (the im2col kernel fuses only a first layer: no input gradient)."""
    if convpool.is_fft(cache):
        return fft_conv_backward(convpool.conv_gradient(dout, cache), cache.conv_input, compute_dA)
    return (None,) + convpool.im2col_weight_gradients(dout, cache)


def pool_of(size):
    return {"f": size, "stride": 2}


def input_size(draw, f, stride, pad, pool):
    """A side of the input whose conv output fits the pool: at least 2 for a 2x2 pool (odd sizes
    included: the pool drops the last row/column), even and at least 4 for a 3x3 pool."""
    if pool == 2:
        return draw(st.integers(max(1, f - 2 * pad + stride), 11))
    side = (draw(st.sampled_from([4, 6, 8])) - 1) * stride + f - 2 * pad + draw(st.integers(0, stride - 1))
    assume(side >= 1)
    return side


@st.composite
def cases(draw):
    algorithm = draw(st.sampled_from(["im2col", "fft-gemm"]))
    f = draw(st.integers(1, 5))
    # fft-gemm: stride 1, pad < f, any channels, 2x2 pools; im2col: one channel, any stride and
    # pad, 2x2 and 3x3 pools
    stride = 1 if algorithm == "fft-gemm" else draw(st.integers(1, 2))
    pad = draw(st.integers(0, f - 1 if algorithm == "fft-gemm" else 2))
    pool = 2 if algorithm == "fft-gemm" else draw(st.sampled_from([2, 3]))
    h, w = input_size(draw, f, stride, pad, pool), input_size(draw, f, stride, pad, pool)
    c_prev = draw(st.integers(1, 3)) if algorithm == "fft-gemm" else 1
    # im2col: channel-first phases up to THIN_FILTERS filters, phase-major above
    c = draw(st.sampled_from([1, 2, 3, 4, convpool.THIN_FILTERS + 1]))
    return dict(algorithm=algorithm, m=draw(st.integers(1, 3)), h=h, w=w, c_prev=c_prev, c=c,
                f=f, stride=stride, pad=pad, pool=pool, binary=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def fused_forward(algorithm, A, W, b, hp, pool=2):
    if algorithm == "fft-gemm":
        return convpool.fft_conv_pool_forward(A, W, b, hp)
    return convpool.conv_pool_forward(A, W, b, hp, pool=pool)


@contextlib.contextmanager
def eval_slices(images):
    saved = convpool.eval_slice_images
    convpool.eval_slice_images = lambda *shape: images
    try:
        yield
    finally:
        convpool.eval_slice_images = saved


def conv_values_in_image_order(cache):
    """The fused kernel's conv output (no bias) in image order: (m, 2*rows, 2*columns, C), the
    rows and columns of each phase."""
    f, m, h, w, c = cache.shape
    if cache.channels_first:  # (row parity, column parity, C, rows, columns, m)
        _, _, _, rows, columns, _ = cache.Z.shape
        Z = cache.Z.transpose(5, 3, 0, 4, 1, 2)
    elif isinstance(cache.conv_input, np.ndarray):  # im2col: (row parity, column parity, m, rows, columns)
        _, _, _, rows, columns, _ = cache.Z.shape
        Z = cache.Z.transpose(2, 3, 0, 4, 1, 5)
    else:  # fft: rows (row parity, h), columns (column parity, w)
        rows, columns = h, w
        Z = cache.Z.reshape(m, 2, h, 2, w, c).transpose(0, 2, 1, 4, 3, 5)
    return Z.reshape(m, 2 * rows, 2 * columns, c)


@settings(max_examples=80, deadline=None)
@given(cases())
def test_matches_loop_reference(images, fft_conv_backward, case):
    rng = np.random.default_rng(case["seed"])
    A = images(rng, (case["m"], case["h"], case["w"], case["c_prev"]), case["binary"])
    W = rng.normal(size=(case["f"], case["f"], case["c_prev"], case["c"]))
    b = rng.normal(size=(1, 1, 1, case["c"]))
    hp, pool = {"stride": case["stride"], "pad": case["pad"]}, case["pool"]
    out, cache = fused_forward(case["algorithm"], A, W, b, hp, pool)
    Z = conv_forward_loop(A, W, b, hp)
    assert np.max(np.abs(out - pool_forward_loop(Z, pool_of(pool)))) < 1e-10
    if case["algorithm"] == "im2col":  # evaluation's way, from the shifted blocks: the same sums
        # in one slice of images and in slices of two (the last one short when m is odd)
        for per_slice in (3, 2):
            with eval_slices(per_slice):
                evaluated = convpool.conv_pool_forward(A, W, b, hp, training=False, pool=pool)[0]
                with_relu = convpool.conv_pool_forward(A, W, b, hp, training=False, relu=True, pool=pool)[0]
            np.testing.assert_allclose(evaluated, out, rtol=1e-13, atol=1e-13)
            assert np.array_equal(with_relu, np.maximum(evaluated, 0))
    else:
        assert np.array_equal(convpool.fft_conv_pool_forward(A, W, b, hp, relu=True)[0], np.maximum(out, 0))
    d_out = rng.normal(size=out.shape)
    fft = case["algorithm"] == "fft-gemm"
    dA, dW, db = conv_pool_backward(fft_conv_backward, d_out, cache, compute_dA=fft)
    # the pool's oracle routes by the kernel's own conv values (exact ties there, while an fft's
    # differ from the loop's, and from another fft plan's, in the last bits), then the conv's
    # oracle takes over
    dZ = np.zeros(Z.shape)
    in_order = conv_values_in_image_order(cache)
    dZ[:, :in_order.shape[1], :in_order.shape[2]] = pool_backward_loop(d_out, in_order, pool_of(pool))
    dA_want, dW_want, db_want = conv_backward_loop(dZ, A, W, hp)
    assert np.max(np.abs(dW - dW_want)) < 1e-10
    assert np.max(np.abs(db - db_want)) < 1e-10
    if fft:
        assert np.max(np.abs(dA - dA_want)) < 1e-10
    else:
        assert dA is None  # a first layer's: nobody needs it


@pytest.mark.parametrize("algorithm,c_prev,pool,rows",
                         [("im2col", 1, 2, 7), ("im2col", 1, 3, 8), ("fft-gemm", 2, 2, 7)])
def test_gradients_match_finite_differences(algorithm, c_prev, pool, rows, numerical_gradient, relative_error,
                                            conv_arrays, fft_conv_backward):
    rng = np.random.default_rng(3)
    A, W, b = conv_arrays(rng, (2, rows, 6, c_prev), 3, 4)
    hp = {"stride": 1, "pad": 1}
    out, cache = fused_forward(algorithm, A, W, b, hp, pool)
    probe = rng.normal(size=out.shape)

    def loss():
        return float(np.sum(fused_forward(algorithm, A, W, b, hp, pool)[0] * probe))

    dA, dW, db = conv_pool_backward(fft_conv_backward, probe, cache, compute_dA=True)
    assert relative_error(dW, numerical_gradient(loss, W)) < 1e-6
    assert relative_error(db, numerical_gradient(loss, b)) < 1e-6
    if algorithm == "fft-gemm":
        assert relative_error(dA, numerical_gradient(loss, A)) < 1e-6


@pytest.mark.parametrize("algorithm,pool,c", [("im2col", 2, 32), ("im2col", 2, 8), ("im2col", 3, 10),
                                              ("fft-gemm", 2, 64)])
def test_float32_forward_is_the_separate_kernels(algorithm, pool, c, float32_close, relative_error,
                                                fft_conv_backward):
    """Same dot products, and the bias after the max: equal within float32 rounding (the shapes
    of LeNet's convs, quick.yaml's first (channel-first phases), and the seed notebook's: a 5x5
    conv with stride 2, a 3x3 pool)."""
    rng = np.random.default_rng(4)
    c_prev, side = (32, 14) if algorithm == "fft-gemm" else (1, 28)
    A = rng.random((16, side, side, c_prev)).astype(np.float32)
    A[:, :4] = 0  # blank rows: tied windows
    W = rng.normal(size=(5, 5, c_prev, c)).astype(np.float32)
    b = rng.normal(size=(1, 1, 1, c)).astype(np.float32)
    hp = {"stride": 1 if pool == 2 else 2, "pad": 2}
    out, cache = fused_forward(algorithm, A, W, b, hp, pool)
    unfused = fftconv if algorithm == "fft-gemm" else F
    assert out.dtype == np.float32
    float32_close(out, F.pool_forward(unfused.conv_forward(A, W, b, hp)[0], pool_of(pool))[0])
    if algorithm == "im2col":  # evaluation's way: one phase at a time, no cache, in slices of
        # images (here 5, 5, 5 and 1), the relu done while a slice is in cache
        with eval_slices(5):
            evaluated, nothing = convpool.conv_pool_forward(A, W, b, hp, training=False, pool=pool)
            with_relu = convpool.conv_pool_forward(A, W, b, hp, training=False, relu=True, pool=pool)[0]
        assert nothing is None
        float32_close(evaluated, out)
        assert np.array_equal(with_relu, np.maximum(evaluated, 0))  # the same products: exactly
        with eval_slices(5):  # a conv without bias: the relu alone
            unbiased = convpool.conv_pool_forward(A, W, None, hp, training=False, relu=True, pool=pool)[0]
        separate = F.pool_forward(F.conv_forward(A, W, np.zeros_like(b), hp)[0], pool_of(pool))[0]
        float32_close(unbiased, np.maximum(separate, 0))
        with pytest.raises(ValueError, match="relu"):
            convpool.conv_pool_forward(A, W, b, hp, relu=True)
    # the gradient is routed by the fused kernel's own conv values (before the bias): over blank
    # rows the fft's outputs are near-ties whose order another GEMM shape or BLAS kernel can flip
    _, conv_cache = unfused.conv_forward(A, W, None, hp)
    in_order = conv_values_in_image_order(cache)
    _, pool_cache = F.pool_forward(in_order, pool_of(pool))
    d_out = rng.normal(size=out.shape).astype(np.float32)
    dA, dW, db = conv_pool_backward(fft_conv_backward, d_out, cache, compute_dA=algorithm == "fft-gemm")
    conv_backward = fft_conv_backward if algorithm == "fft-gemm" else F.conv_backward
    want = conv_backward(F.pool_backward(d_out, pool_cache), conv_cache, algorithm == "fft-gemm")
    assert dW.dtype == np.float32
    for got, expected in zip((dA, dW, db), want):
        assert (got is None) == (expected is None)
        if got is not None:
            assert relative_error(got, expected) < 1e-5


def test_refuses_what_it_cannot_do():
    W = np.ones((3, 3, 2, 4))
    with pytest.raises(ValueError, match="one-channel"):
        convpool.conv_pool_forward(np.ones((1, 6, 6, 2)), W, None, {"stride": 1, "pad": 1})
    with pytest.raises(ValueError, match="room for the pool"):
        convpool.conv_pool_forward(np.ones((1, 3, 3, 1)), np.ones((3, 3, 1, 4)), None, {"stride": 1, "pad": 0})
    with pytest.raises(ValueError, match="an even conv output"):  # 27 rows: a 3x3 pool's phases differ
        convpool.conv_pool_forward(np.ones((1, 27, 28, 1)), np.ones((5, 5, 1, 4)), None, {"stride": 1, "pad": 2},
                                   pool=3)
    with pytest.raises(ValueError, match="stride 1"):
        convpool.fft_conv_pool_forward(np.ones((1, 8, 8, 2)), W, None, {"stride": 2, "pad": 1})
    pooled, cache = convpool.conv_pool_forward(np.ones((2, 6, 6, 1)), np.ones((3, 3, 1, 4)), None,
                                               {"stride": 1, "pad": 1})
    with pytest.raises(ValueError, match=r"dout must have the pooled output's shape \(2, 3, 3, 4\)"):
        convpool.conv_gradient(pooled[:1], cache)
    assert convpool.supported((28, 28, 1), 5, 2, 2, 3, 2)  # the seed notebook's
    assert not convpool.supported((28, 28, 1), 5, 1, 2, 3, 3)  # stride 2 only
    assert not convpool.supported((14, 14, 32), 5, 1, 2, 3, 2, "fft-gemm")
    assert convpool.supported((14, 14, 32), 5, 1, 2, 2, 2, "fft-gemm")



@pytest.mark.parametrize("f, stride, pad", [(5, 1, 2), (3, 2, 1), (5, 2, 0)])
def test_one_channel_columns_are_im2cols_matrix(f, stride, pad):
    """The unfused one-channel conv's column matrix is im2col's, entry for entry."""
    A_pad = F.zero_pad(np.random.default_rng(0).random((3, 11, 9, 1), dtype=np.float32), pad)
    n_H, n_W = F.output_size(11, f, stride, pad), F.output_size(9, f, stride, pad)
    np.testing.assert_array_equal(convpool.one_channel_columns(A_pad, f, stride, n_H, n_W),
                                  F.im2col(A_pad, f, stride, n_H, n_W))

RELU, POOL_LAYER = {"type": "relu"}, {"type": "maxpool2d", "size": 2}
LENET = [{"type": "conv2d", "filters": 8, "kernel": 5, "padding": 2}, RELU, POOL_LAYER,
         {"type": "conv2d", "filters": 8, "kernel": 3, "padding": 1, "algorithm": "im2col"}, RELU, POOL_LAYER,
         {"type": "flatten"}, {"type": "dense", "units": 10}]
NOTEBOOK = [{"type": "conv2d", "filters": 10, "kernel": 5, "stride": 2, "padding": 2}, RELU,
            {"type": "maxpool2d", "size": 3, "stride": 2}, {"type": "flatten"}, {"type": "dense", "units": 10}]


# LeNet's second conv (3x3 on 6x6x8: im2col) needs its input gradient, so it pools apart (in
# evaluation its bias after the pool)
@pytest.mark.parametrize("layers,side,training,evaluation,pool", [
    (LENET, 12, [(0, 2), (1,), (3,), (5,), (4,)], [(0, 2, 1), (3,), (5,), (3,), (4,)], 2),
    (NOTEBOOK, 28, [(0, 2), (1,), (3,), (4,)], [(0, 2, 1), (3,), (4,)], 3),
])
def test_plan_fuses_a_first_one_channel_conv_and_keeps_its_numbers(layers, side, training, evaluation, pool,
                                                                     float32_close, relative_error):
    model = Sequential.from_config(layers, (side, side, 1), np.random.default_rng(0))
    for layer in model.layers:
        if "b" in layer.params:  # non-zero biases, so that adding them after the pool is tested
            layer.params["b"][...] = np.random.default_rng(1).normal(size=layer.params["b"].shape)
    x = (np.random.default_rng(2).random((9, side, side, 1)) > 0.5).astype(np.float32)
    plan = Plan(model)
    assert [step.layers for step in plan.training_steps][:len(training)] == training
    assert [step.layers for step in plan.evaluation_steps][:len(evaluation)] == evaluation
    assert f"max pool {pool}x{pool}" in plan.training_steps[0].what
    float32_close(plan.forward(x)[0], model.forward(x))
    float32_close(plan.predict_logits(x), model.forward(x))
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


@pytest.mark.parametrize("offsets", [4, 9])
def test_the_fast_first_max_masks_are_the_engines_ties_included(offsets):
    rng = np.random.default_rng(offsets)
    windows = [(rng.random((6, 5, 5, 3)) > 0.5).astype(np.float32) for _ in range(offsets)]  # many ties
    maximum = np.maximum.reduce(windows)
    plain, fast = list(F.first_max_masks(windows, maximum)), list(convpool.first_max_masks(windows, maximum))
    assert len(plain) == len(fast) == offsets
    for mask, fast_mask in zip(plain, fast):
        np.testing.assert_array_equal(fast_mask, mask)
    np.testing.assert_array_equal(np.sum(plain, axis=0), 1)  # each window's gradient goes to one cell
