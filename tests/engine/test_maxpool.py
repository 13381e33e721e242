"""The overlapping max pool's backward by cell number against the loop oracle and the plain
engine, ties included, and where the plan uses it."""

import numpy as np
from hypothesis import given, settings, strategies as st

from mnistcnn import config as cfg
from mnistcnn.engine import functional as F
from mnistcnn.engine.fast import maxpool
from mnistcnn.engine.fast.plan import Plan
from mnistcnn.engine.model import Sequential
from mnistcnn.engine.reference import pool_backward_loop


@st.composite
def overlapping_pools(draw):
    f = draw(st.integers(2, 4))
    stride = draw(st.integers(1, f - 1))
    h, w = draw(st.integers(f, 11)), draw(st.integers(f, 11))
    return dict(m=draw(st.integers(1, 3)), h=h, w=w, c=draw(st.integers(1, 4)), f=f, stride=stride,
                levels=draw(st.sampled_from([None, 2, 3])), seed=draw(st.integers(0, 2**16)))


def pool_case(case):
    """``(A_prev, hparameters, A, cache, dA)`` in float64 for one drawn case."""
    rng = np.random.default_rng(case["seed"])
    shape = (case["m"], case["h"], case["w"], case["c"])
    # few levels: many windows hold their maximum twice, so the tie rule decides
    A_prev = rng.standard_normal(shape) if case["levels"] is None else rng.integers(0, case["levels"], shape) * 1.0
    hp = {"f": case["f"], "stride": case["stride"]}
    A, cache = F.pool_forward(A_prev, hp)
    return A_prev, hp, A, cache, rng.standard_normal(A.shape)


@settings(max_examples=80, deadline=None)
@given(overlapping_pools())
def test_matches_the_loop_reference_ties_included(case):
    A_prev, hp, A, _, dA = pool_case(case)
    got = maxpool.max_pool_backward(dA, A_prev, A, case["f"], case["stride"])
    np.testing.assert_allclose(got, pool_backward_loop(dA, A_prev, hp), rtol=1e-12, atol=1e-12)


@settings(max_examples=80, deadline=None)
@given(overlapping_pools())
def test_float64_sums_are_the_plain_engines(case):
    """Each cell adds its windows' gradients in the plain engine's order (scalar additions, no
    BLAS); another path, so compared within float64 rounding."""
    A_prev, _, A, cache, dA = pool_case(case)
    got = maxpool.max_pool_backward(dA, A_prev, A, case["f"], case["stride"])
    np.testing.assert_allclose(got, F.pool_backward(dA, cache), rtol=1e-12, atol=1e-12)


def test_float32_matches_the_plain_engine(float32_close):
    rng = np.random.default_rng(0)
    A_prev = rng.standard_normal((16, 14, 14, 10)).astype(np.float32)
    A_prev[:, ::2] = np.round(A_prev[:, ::2])  # ties in every other row
    hp = {"f": 3, "stride": 2}
    A, cache = F.pool_forward(A_prev, hp)
    dA = rng.standard_normal(A.shape).astype(np.float32)
    got = maxpool.max_pool_backward(dA, A_prev, A, 3, 2)
    assert got.dtype == np.float32
    float32_close(got, F.pool_backward(dA, cache))


def test_the_plan_takes_it_for_overlapping_windows_in_training_only(configs):
    # after a second conv: the pool cannot be fused with it (the notebook's first conv fuses)
    layers = [{"type": "conv2d", "filters": 4, "kernel": 3, "padding": 1}, {"type": "relu"},
              {"type": "conv2d", "filters": 6, "kernel": 3, "padding": 1}, {"type": "relu"},
              {"type": "maxpool2d", "size": 3, "stride": 2}, {"type": "flatten"}, {"type": "dense", "units": 10}]
    rows = Plan(Sequential.from_config(layers, (12, 12, 1))).describe()
    assert ("training", "4", "maxpool2d 3x3 stride 2, gradient by cell number") in rows
    assert ("evaluation", "4", "maxpool2d") in rows
    lenet = cfg.load_config(configs / "lenet.yaml")
    tiled = Plan(Sequential.from_config(lenet["model"]["layers"], lenet["model"]["input_shape"])).describe()
    assert not any("cell number" in what for _, _, what in tiled)
