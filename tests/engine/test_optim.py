"""Optimisers and schedules: known updates, state save/restore."""
import math

import numpy as np
import pytest

from mnistcnn.engine.optim import SGD, Adam, AdamW, Schedule


def quadratic_run(opt, steps=200):
    p = {"0.W": np.array([3.0, -2.0])}
    for _ in range(steps):
        opt.step(p, {"0.W": 2 * p["0.W"]})
    return p["0.W"]


@pytest.mark.parametrize("opt", [SGD(0.1), SGD(0.05, momentum=0.9), SGD(0.05, momentum=0.9, nesterov=True),
                                 Adam(0.1), AdamW(0.1, weight_decay=0.01)])
def test_optimisers_minimise_a_quadratic(opt):
    assert np.abs(quadratic_run(opt)).max() < 1e-2


def test_sgd_momentum_matches_hand_computation():
    opt = SGD(0.1, momentum=0.9)
    p = {"0.W": np.array([1.0])}
    opt.step(p, {"0.W": np.array([1.0])})   # v = 1, p = 0.9
    opt.step(p, {"0.W": np.array([1.0])})   # v = 1.9, p = 0.71
    assert np.allclose(p["0.W"], 0.71)


def test_adam_first_step_is_lr_times_sign():
    p = {"0.W": np.array([1.0, -1.0]), "0.b": np.array([0.5])}
    Adam(0.01).step(p, {"0.W": np.array([5.0, -0.1]), "0.b": np.array([2.0])})
    assert np.allclose(p["0.W"], [0.99, -0.99]) and np.allclose(p["0.b"], [0.49])


def test_weight_decay_touches_only_weights():
    p = {"0.W": np.array([1.0]), "0.b": np.array([1.0])}
    SGD(0.1, weight_decay=0.5).step(p, {"0.W": np.zeros(1), "0.b": np.zeros(1)})
    assert np.allclose(p["0.W"], 0.95) and np.allclose(p["0.b"], 1.0)


@pytest.mark.parametrize("cls", [lambda: SGD(0.1, momentum=0.9), lambda: Adam(0.1)])
def test_state_save_restore_continues_identically(cls):
    a, p = cls(), {"0.W": np.array([3.0, -2.0])}
    for _ in range(5):
        a.step(p, {"0.W": 2 * p["0.W"]})
    b = cls()
    b.load_state_dict(a.state_dict())
    q = {"0.W": p["0.W"].copy()}
    for _ in range(5):
        a.step(p, {"0.W": 2 * p["0.W"]})
        b.step(q, {"0.W": 2 * q["0.W"]})
    assert np.array_equal(p["0.W"], q["0.W"])


def test_schedules():
    s = Schedule(1.0, steps_per_epoch=10, epochs=10, type="step", step_epochs=3, gamma=0.5)
    assert s(0) == 1.0 and s(29) == 1.0 and s(30) == 0.5 and s(60) == 0.25
    c = Schedule(1.0, 10, 10, type="cosine", warmup_epochs=1, min_lr=0.1)
    assert c(0) == pytest.approx(0.1) and c(9) == pytest.approx(1.0)
    assert c(10) == pytest.approx(1.0) and c(99) < 0.11
    mid = 10 + 45
    assert c(mid) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert Schedule(0.3, 5, 2)(7) == 0.3
