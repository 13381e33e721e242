"""The frequency-domain convolution against the loop oracle, finite differences and im2col."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mnistcnn.engine.fast import fftconv
from mnistcnn.engine.fast.plan import Plan, conv_method
from mnistcnn.engine import functional as F
from mnistcnn.engine.layer_arguments import ShapeError
from mnistcnn.engine.layers import layer_from_config
from mnistcnn.engine.model import Sequential
from mnistcnn.engine.reference import conv_backward_loop, conv_forward_loop


@st.composite
def fft_cases(draw):
    f = draw(st.integers(1, 5))
    pad = draw(st.integers(0, f - 1))  # the frequency domain needs pad < f
    h = draw(st.integers(max(1, f - 2 * pad), 9))
    w = draw(st.integers(max(1, f - 2 * pad), 9))
    return dict(m=draw(st.integers(1, 3)), h=h, w=w, c_prev=draw(st.integers(1, 4)), c=draw(st.integers(1, 4)),
                f=f, pad=pad, seed=draw(st.integers(0, 2**16)))


@settings(max_examples=60, deadline=None)
@given(fft_cases())
def test_fft_conv_matches_loop_reference(conv_arrays, fft_conv_backward, case):
    rng = np.random.default_rng(case["seed"])
    A, W, b = conv_arrays(rng, (case["m"], case["h"], case["w"], case["c_prev"]), case["f"], case["c"])
    hp = {"stride": 1, "pad": case["pad"]}
    Z, cache = fftconv.conv_forward(A, W, b, hp)
    assert np.max(np.abs(Z - conv_forward_loop(A, W, b, hp))) < 1e-10
    dZ = rng.normal(size=Z.shape)
    dA, dW, db = fft_conv_backward(dZ, cache)
    for got, want in zip((dA, dW, db), conv_backward_loop(dZ, A, W, hp)):
        assert got.shape == want.shape
        assert np.max(np.abs(got - want)) < 1e-10


@pytest.mark.parametrize("shape,f,pad", [((6, 5, 3), 3, 1), ((5, 7, 2), 5, 2), ((4, 4, 3), 2, 0), ((3, 3, 2), 3, 2)])
def test_fft_conv_gradients_match_finite_differences(shape, f, pad, numerical_gradient, relative_error, conv_arrays,
                                                    fft_conv_backward):
    rng = np.random.default_rng(1)
    A, W, b = conv_arrays(rng, (2,) + shape, f, 3)
    hp = {"stride": 1, "pad": pad}
    Z, cache = fftconv.conv_forward(A, W, b, hp)
    probe = rng.normal(size=Z.shape)  # loss = sum(Z * probe), so dZ = probe

    def loss():
        return float(np.sum(fftconv.conv_forward(A, W, b, hp)[0] * probe))

    dA, dW, db = fft_conv_backward(probe, cache)
    for analytic, array in ((dA, A), (dW, W), (db, b)):
        assert relative_error(analytic, numerical_gradient(loss, array)) < 1e-6


def test_lenet_conv2_in_float32_agrees_with_im2col(fft_conv_backward):
    rng = np.random.default_rng(2)
    A = rng.random((8, 14, 14, 32), dtype=np.float32)
    W = (rng.normal(size=(5, 5, 32, 64)) * 0.05).astype(np.float32)
    b = rng.normal(size=(1, 1, 1, 64)).astype(np.float32)
    hp = {"stride": 1, "pad": 2}
    Z, cache = fftconv.conv_forward(A, W, b, hp)
    Z0, cache0 = F.conv_forward(A, W, b, hp)
    assert Z.dtype == np.float32
    assert np.max(np.abs(Z - Z0)) < 1e-5 * np.max(np.abs(Z0))
    dZ = rng.normal(size=Z.shape).astype(np.float32)
    for got, want in zip(fft_conv_backward(dZ, cache), F.conv_backward(dZ, cache0)):
        assert got.dtype == np.float32
        assert np.max(np.abs(got - want)) < 1e-5 * np.max(np.abs(want))


def test_auto_chooses_by_shape_and_config_overrides():
    model = Sequential.from_config([
        {"type": "conv2d", "filters": 32, "kernel": 5, "padding": 2},
        {"type": "maxpool2d", "size": 2},
        {"type": "conv2d", "filters": 64, "kernel": 5, "padding": 2},
        {"type": "conv2d", "filters": 8, "kernel": 3, "stride": 2},
        {"type": "conv2d", "filters": 16, "kernel": 3, "padding": 1},  # 1.32x im2col's multiply-adds
    ], (28, 28, 1), np.random.default_rng(0))
    # the first conv: one channel, 4.25x im2col's multiply-adds in the frequency domain
    assert list(Plan(model).methods.values()) == ["im2col", "fft-gemm", "im2col", "fft-gemm"]
    # a model-wide fft-gemm applies where it can; im2col everywhere
    assert list(Plan(model, "fft-gemm").methods.values()) == ["fft-gemm", "fft-gemm", "im2col", "fft-gemm"]
    assert list(Plan(model, "im2col").methods.values()) == ["im2col"] * 4
    forced = layer_from_config({"type": "conv2d", "filters": 4, "kernel": 3, "padding": 1, "algorithm": "fft-gemm"})
    forced.build((28, 28, 1))
    assert conv_method(forced) == "fft-gemm"
    strided = layer_from_config({"type": "conv2d", "filters": 4, "kernel": 3, "stride": 2, "algorithm": "fft-gemm"})
    strided.build((28, 28, 1))
    with pytest.raises(ShapeError, match="fft-gemm needs stride 1"):
        conv_method(strided)


def test_fft_conv_step_gradients_match_finite_differences(numerical_gradient, relative_error):
    rng = np.random.default_rng(3)
    model = Sequential.from_config([{"type": "relu"}, {"type": "conv2d", "filters": 3, "kernel": 3, "padding": 1,
                                                       "algorithm": "fft-gemm"}], (5, 6, 2), rng, dtype=np.float64)
    step = Plan(model).training_steps[1]
    x = rng.normal(size=(2, 5, 6, 2))
    out, cache = step.forward(x, True, None)
    probe = rng.normal(size=out.shape)
    dx, work = step.backward(probe, cache)
    grads = work()

    def loss():
        return float(np.sum(step.forward(x, True, None)[0] * probe))

    assert relative_error(dx, numerical_gradient(loss, x)) < 1e-6
    assert set(grads) == {"1.W", "1.b"}
    for key, grad in grads.items():
        assert relative_error(grad, numerical_gradient(loss, model.params()[key])) < 1e-6


def test_spectral_weights_are_shared_and_follow_in_place_updates(float32_close):
    """The trainer computes a conv's spectral weights once per step (split between threads)
    and the workers reuse them; an in-place change of W, as the optimiser makes, must never
    leave a forward pass on stale weights."""
    from concurrent.futures import ThreadPoolExecutor

    specs = [{"type": "conv2d", "filters": 6, "kernel": 5, "padding": 2, "algorithm": "fft-gemm"}, {"type": "relu"}]
    model = Sequential.from_config(specs, (10, 10, 3), np.random.default_rng(0))
    W = model.params()["0.W"]
    plan = Plan(model)
    with ThreadPoolExecutor(2) as pool:  # the frequencies split between two threads
        plan.prepare(lambda fn, items: list(pool.map(fn, items)))
    whole = fftconv.spectral_weights(W, 10, 10, 2)
    spectrum = plan.spectra[0]
    float32_close(spectrum.weights.blocks, whole.blocks)
    float32_close(spectrum.weights.blocks_t, whole.blocks_t)

    x = np.random.default_rng(1).random((4, 10, 10, 3), dtype=np.float32)
    assert plan.training_steps[0].spectrum is spectrum is plan.evaluation_steps[0].spectrum  # made once for both
    cached = spectrum.current()
    assert cached is not None
    out, _ = plan.forward(x)
    assert spectrum.current() is cached  # reused, not recomputed
    W -= 0.01  # in place, like an optimiser step
    assert spectrum.current() is None
    fresh = Sequential.from_config(specs, (10, 10, 3))
    fresh.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(plan.forward(x)[0], Plan(fresh).forward(x)[0])
    assert not np.array_equal(plan.forward(x)[0], out)


def test_refuses_what_it_cannot_do(fft_conv_backward):
    """A stride or padding the frequency domain cannot compute, and a gradient of another shape
    than the output, are errors rather than wrong numbers."""
    A, W = np.ones((1, 8, 8, 2)), np.ones((3, 3, 2, 4))
    for hparameters in ({"stride": 2, "pad": 1}, {"stride": 1, "pad": 3}):
        with pytest.raises(ValueError, match="needs stride 1 and pad < f"):
            fftconv.conv_forward(A, W, None, hparameters)
    Z, cache = fftconv.conv_forward(A, W, None, {"stride": 1, "pad": 1})
    with pytest.raises(ValueError, match=r"dZ must have the forward output's shape \(1, 8, 8, 4\)"):
        fft_conv_backward(Z[:, :7], cache)
